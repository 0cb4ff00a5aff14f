//! The client's commands: each builds one request, relays events, prints the answer.

use std::io::Write;

use serde_json::{json, Value};
use token_proto::{
    DpopTarget, Event, GetRequest, LoginMode, LoginPolicy, LoginRequest, Op, PasteRequest, Purpose,
    ReloadReply, SiteRequest, StatusReply, StatusRequest, TokenKind, TokenReply,
};

use crate::cli::{Command, Format, GetArgs, HELP};
use crate::conn::Conn;
use crate::time::{human_duration, now_unix, rfc3339};
use crate::{browser, platform, ClientError};
use token_proto::text::clean;

pub fn run(cmd: Command) -> Result<u8, ClientError> {
    match cmd {
        Command::Help => print(HELP),
        Command::Version => print(&format!("token {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Get(args) => {
            let reply = get(&args)?;
            print(&render(&reply, args.format))
        }
        Command::Exec {
            get: args,
            var,
            argv,
        } => {
            let reply = get(&args)?;
            let (program, rest) = argv
                .split_first()
                .ok_or_else(|| ClientError::Usage("`token exec` needs a COMMAND".to_owned()))?;
            let mut cmd = std::process::Command::new(program);
            cmd.args(rest).env(var, &reply.access_token);
            if let Some(proof) = &reply.dpop_proof {
                cmd.env("DPOP", proof);
            }
            platform::exec(cmd).map_err(|e| {
                ClientError::Other(format!(
                    "could not run `{}`: {e}",
                    program.to_string_lossy()
                ))
            })
        }
        Command::Kube { get: args } => {
            let reply = get(&args)?;
            let mut status = json!({ "token": reply.access_token });
            if let Some(at) = reply.expires_at {
                status["expirationTimestamp"] = Value::String(rfc3339(at));
            }
            let cred = json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "status": status,
            });
            print(&format!("{cred}\n"))
        }
        Command::Credential { action } => crate::credential::run(&action),
        Command::Completions { shell } => match crate::completions::script(&shell) {
            Some(script) => print(script),
            None => Err(ClientError::Usage(format!(
                "no completions for `{shell}`: use bash, zsh or fish"
            ))),
        },
        Command::Sites => {
            let names = crate::completions::sites_in(&token_proto::config_path());
            print(&names.iter().map(|n| format!("{n}\n")).collect::<String>())
        }
        Command::Login { site, mode } => {
            let mode = if mode == LoginMode::Browser && browser::no_browser_here() {
                LoginMode::NoBrowser
            } else {
                mode
            };
            let v = Conn::request(
                Op::Login(LoginRequest {
                    site: site.clone(),
                    mode,
                }),
                show_event,
            )?;
            let reply: TokenReply = from_reply(v)?;
            warn(&reply);
            let valid = reply.expires_at.map_or("does not expire".to_owned(), |at| {
                format!(
                    "valid for {}",
                    human_duration(at as i64 - now_unix() as i64)
                )
            });
            eprintln!("token: logged in to site {site}; the token is {valid}");
            Ok(0)
        }
        Command::Logout { site } => {
            let v = Conn::request(Op::Logout(SiteRequest { site }), show_event)?;
            if let Some(msg) = v.get("message").and_then(Value::as_str) {
                eprintln!("token: {msg}");
            }
            Ok(0)
        }
        Command::Status { site, json } => {
            let v = Conn::request(Op::Status(StatusRequest { site }), show_event)?;
            let reply: StatusReply = from_reply(v)?;
            if json {
                let text = serde_json::to_string_pretty(&reply).unwrap_or_default();
                print(&format!("{text}\n"))
            } else {
                print(&status_table(&reply))
            }
        }
        Command::Reload => {
            let v = Conn::request(Op::Reload, show_event)?;
            let reply: ReloadReply = from_reply(v)?;
            for e in &reply.config_errors {
                eprintln!("token: {}", clean(e, 2000));
            }
            if reply.kept_previous {
                eprintln!(
                    "token: tokend kept its previous settings ({} site(s)) until the config file parses",
                    reply.sites
                );
            } else {
                eprintln!("token: tokend reloaded its config: {} site(s)", reply.sites);
            }
            Ok(if reply.config_errors.is_empty() { 0 } else { 2 })
        }
        Command::Stop => {
            Conn::open_no_start()?.call(Op::Stop, show_event)?;
            Ok(0)
        }
    }
}

pub(crate) fn get(args: &GetArgs) -> Result<TokenReply, ClientError> {
    let login = if args.no_login || !browser::caller_can_log_in() {
        LoginPolicy::Never
    } else {
        LoginPolicy::Auto
    };
    let op = Op::Get(GetRequest {
        site: args.site.clone(),
        min_ttl: args.min_ttl,
        scopes: args.scopes.clone(),
        login,
        no_browser: browser::no_browser_here(),
        dpop: args.dpop.clone().map(|(method, url)| DpopTarget {
            method,
            url,
            nonce: args.dpop_nonce.clone(),
        }),
        token: args.id_token.then_some(TokenKind::IdToken),
        purpose: args.kube.then_some(Purpose::Kube),
    });
    let reply: TokenReply = from_reply(Conn::request(op, show_event)?)?;
    if args.dpop.is_some() && reply.dpop_proof.is_none() {
        return Err(ClientError::Other(format!(
            "site {}: tokend sent no DPoP proof (it predates --dpop); restart it with `token stop`",
            args.site
        )));
    }
    warn(&reply);
    if args.id_token && reply.token != Some(TokenKind::IdToken) {
        // A daemon from before --id-token ignores the field and would hand
        // out the access token in its place.
        return Err(ClientError::Other(format!(
            "site {}: the running tokend does not serve ID tokens; restart it with `token stop` so this version's starts",
            args.site
        )));
    }
    Ok(reply)
}

/// The daemon's warning about a token (shorter-lived than asked, not
/// persisted, scopes narrower than configured), on stderr.
fn warn(reply: &TokenReply) {
    if let Some(w) = &reply.warning {
        eprintln!("token: warning: {}", clean(w, 2000));
    }
}

fn from_reply<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v)
        .map_err(|e| ClientError::Other(format!("tokend sent an answer this token does not understand: {e}; restart it with `token stop`")))
}

/// With a DPoP proof, raw is two lines (the token, then the proof) and
/// header two headers; json carries it as `dpop_proof`.
fn render(reply: &TokenReply, format: Format) -> String {
    let proof = reply.dpop_proof.as_deref();
    match format {
        Format::Raw => match proof {
            Some(p) => format!("{}\n{p}\n", reply.access_token),
            None => format!("{}\n", reply.access_token),
        },
        Format::Header => {
            // A DPoP-bound token goes with the DPoP scheme (RFC 9449 §7.1).
            let scheme = if reply.token_type.eq_ignore_ascii_case("dpop") {
                "DPoP"
            } else {
                "Bearer"
            };
            let mut out = format!("Authorization: {scheme} {}\n", reply.access_token);
            if let Some(p) = proof {
                out.push_str(&format!("DPoP: {p}\n"));
            }
            out
        }
        Format::Json if reply.token == Some(TokenKind::IdToken) => format!(
            "{}\n",
            json!({
                "id_token": reply.access_token,
                "expires_at": reply.expires_at,
                "scopes": reply.scopes,
                "api_key": reply.api_key,
            })
        ),
        Format::Json => {
            let mut v = json!({
                "access_token": reply.access_token,
                "token_type": reply.token_type,
                "expires_at": reply.expires_at,
                "scopes": reply.scopes,
                "api_key": reply.api_key,
            });
            if let Some(p) = proof {
                v["dpop_proof"] = Value::String(p.to_owned());
            }
            format!("{v}\n")
        }
    }
}

/// Shows what the daemon says while the caller waits (a login URL, a device
/// code), and for a paste-back login reads the user's paste from stdin.
/// An event's text, safe for a terminal: its URLs, codes and names come
/// from the provider, so control characters go (the QR code keeps its
/// block characters and line breaks only).
fn clean_event(ev: &Event) -> Event {
    const MAX_URL: usize = 8192;
    let c = |s: &String| clean(s, MAX_URL);
    match ev {
        Event::LoginUrl {
            site,
            url,
            open_browser,
            timeout,
        } => Event::LoginUrl {
            site: c(site),
            url: c(url),
            open_browser: *open_browser,
            timeout: *timeout,
        },
        Event::DeviceCode {
            site,
            user_code,
            verification_uri,
            verification_uri_complete,
            timeout,
            qr,
        } => Event::DeviceCode {
            site: c(site),
            user_code: clean(user_code, 64),
            verification_uri: c(verification_uri),
            verification_uri_complete: verification_uri_complete.as_ref().map(c),
            timeout: *timeout,
            qr: qr.as_ref().map(|q| {
                q.chars()
                    .filter(|ch| matches!(ch, ' ' | '\n' | '▀' | '▄' | '█'))
                    .collect()
            }),
        },
        Event::PasteUrl {
            site,
            url,
            paste,
            timeout,
        } => Event::PasteUrl {
            site: c(site),
            url: c(url),
            paste: *paste,
            timeout: *timeout,
        },
        Event::Unknown => Event::Unknown,
    }
}

fn show_event(ev: &Event) -> Result<(), ClientError> {
    let ev = &clean_event(ev);
    if let Event::PasteUrl {
        site,
        url,
        paste: true,
        ..
    } = ev
    {
        return paste(site, url);
    }
    let mut err = std::io::stderr().lock();
    match ev {
        Event::LoginUrl {
            site,
            url,
            open_browser,
            timeout,
        } => {
            if *open_browser {
                let _ = writeln!(
                    err,
                    "token: site {site} needs a login; opening your browser. If it does not open, visit:\n\n    {url}\n"
                );
                if let Err(e) = browser::open(url) {
                    let _ = writeln!(
                        err,
                        "token: {e}.\n       Open the URL above by hand, or set BROWSER to a command that opens URLs, \
                         or log in without a browser here: `token login {site} --device` (where the provider \
                         offers device login) or `token login {site} --paste`"
                    );
                }
            } else {
                let _ = writeln!(
                    err,
                    "token: site {site} is waiting for a login already in progress; if no browser tab is open for it, visit:\n\n    {url}\n"
                );
            }
            let _ = writeln!(
                err,
                "token: waiting up to {} for the login to finish (Ctrl-C cancels)",
                human_duration(*timeout as i64)
            );
        }
        Event::DeviceCode {
            site,
            user_code,
            verification_uri,
            verification_uri_complete,
            timeout,
            qr,
        } => {
            let _ = writeln!(
                err,
                "token: site {site}: on any device, open\n\n    {verification_uri}\n\nand enter the code\n\n    {user_code}\n"
            );
            if let Some(full) = verification_uri_complete {
                let _ = writeln!(err, "token: or open {full}");
                use std::io::IsTerminal;
                if let Some(qr) = qr.as_deref().filter(|_| std::io::stderr().is_terminal()) {
                    let _ = writeln!(err, "token: or scan it:\n\n{qr}");
                }
            }
            let _ = writeln!(
                err,
                "token: waiting up to {} (Ctrl-C cancels)",
                human_duration(*timeout as i64)
            );
        }
        Event::PasteUrl { site, url, .. } => {
            let _ = writeln!(
                err,
                "token: site {site} is waiting for a paste-back login already in progress in another terminal:\n\n    {url}\n"
            );
        }
        Event::Unknown => {}
    }
    Ok(())
}

/// Paste-back: show the URL, read the final URL (or the code) from stdin,
/// hand it to the daemon on a second connection. An empty paste cancels.
fn paste(site: &str, url: &str) -> Result<(), ClientError> {
    use std::io::{BufRead, IsTerminal};
    {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "token: site {site}: open this URL in a browser and approve:\n\n    {url}\n\n\
             token: then paste the address your browser ends on (or just the code) and press Enter:"
        );
        if std::io::stdin().is_terminal() {
            let _ = write!(err, "> ");
        }
        let _ = err.flush();
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    let input = line.trim().to_owned();
    // Always answer the daemon, so an empty paste ends the login now rather
    // than at its timeout.
    Conn::request(
        Op::Paste(PasteRequest {
            site: site.to_owned(),
            input: input.clone(),
        }),
        |_| Ok(()),
    )?;
    match read {
        Err(e) => Err(ClientError::Other(format!(
            "site {site}: cannot read the paste from stdin: {e}"
        ))),
        Ok(_) if input.is_empty() => Err(ClientError::Usage(format!(
            "site {site}: nothing was pasted; run `token login {site} --paste` and paste the final URL"
        ))),
        Ok(_) => Ok(()),
    }
}

fn status_table(reply: &StatusReply) -> String {
    let now = now_unix() as i64;
    let mut rows = vec![[
        "SITE".to_owned(),
        "STATE".to_owned(),
        "EXPIRES IN".to_owned(),
        "SCOPES".to_owned(),
        "LAST REFRESH".to_owned(),
        "NEXT REFRESH".to_owned(),
        "LAST ERROR".to_owned(),
    ]];
    for s in &reply.sites {
        let expires = match (s.has_access_token, s.expires_at) {
            (false, _) => "-".to_owned(),
            (true, Some(at)) => human_duration(at as i64 - now),
            (true, None) => "never".to_owned(),
        };
        let last = s.last_refresh.map_or("-".to_owned(), |t| {
            format!("{} ago", human_duration((now - t as i64).max(1)))
        });
        let next = s.next_refresh.map_or("-".to_owned(), |t| {
            format!("in {}", human_duration((t as i64 - now).max(1)))
        });
        let scopes = if s.scopes.is_empty() {
            "-".to_owned()
        } else {
            s.scopes.join(" ")
        };
        // Errors first, then what is worth knowing (not persisted, fewer
        // scopes granted than configured).
        let said: Vec<String> = s
            .last_error
            .iter()
            .chain(&s.notes)
            .map(|t| clean(t, 500))
            .collect();
        let said = if said.is_empty() {
            "-".to_owned()
        } else {
            said.join("; ")
        };
        rows.push([
            s.site.clone(),
            s.state.replace('_', " "),
            expires,
            scopes,
            last,
            next,
            said,
        ]);
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!(
        "tokend {} (pid {}), config {}\nstore: {}, log: {}\n",
        reply.version,
        reply.pid,
        reply.config,
        if reply.store.is_empty() {
            "?"
        } else {
            &reply.store
        },
        if reply.log.is_empty() {
            "?"
        } else {
            &reply.log
        },
    );
    if let Some(note) = &reply.store_note {
        out.push_str(&format!("store note: {}\n", clean(note, 500)));
    }
    for e in &reply.config_errors {
        out.push_str(&format!("config error: {e}\n"));
    }
    if reply.sites.is_empty() {
        out.push_str("no sites configured: add a [site.NAME] table to the config file\n");
        return out;
    }
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i == 6 {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Writes to stdout; a closed pipe (`token get x | head -c0`) is not an error.
fn print(s: &str) -> Result<u8, ClientError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(ClientError::Other(format!("cannot write to stdout: {e}"))),
    }
}
