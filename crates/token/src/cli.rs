//! Command-line parsing (lexopt) and the help text.

use std::ffi::OsString;

use lexopt::prelude::*;
use token_proto::{names, parse_duration, LoginMode, Purpose};

use crate::ClientError;

pub const HELP: &str = "\
token — print fresh OAuth access tokens, kept fresh by the tokend daemon

USAGE:
    token get SITE [--min-ttl DUR] [--scope S]... [--format raw|header|json] [--no-login] [--id-token]
              [--dpop METHOD URL]
    token login SITE [--device | --paste]
    token logout SITE
    token status [SITE] [--json]
    token exec SITE [--env VAR] [--dpop METHOD URL] -- COMMAND [ARGS]...
    token kube SITE [--id-token]
    token credential get|store|erase      (git credential helper; also git-credential-token)
    token completions bash|zsh|fish
    token reload | token stop

COMMANDS:
    get       Print a valid access token for SITE on stdout and nothing else.
              Logs in through your browser first if the site needs consent.
                --min-ttl DUR   the token must stay valid this long (300, 90s, 5m, 1h)
                --scope S       a token for a subset of the site's scopes (repeatable)
                --format F      raw (default) | header (`Authorization: Bearer ...`) |
                                json (access_token, token_type, expires_at, scopes, api_key)
                --no-login      never start a login: exit 3 instead
                --dpop METHOD URL  for `dpop = true` sites: also a DPoP proof for
                                that one request, signed by tokend. raw prints the
                                token on line 1 and the proof on line 2; header
                                prints `Authorization: DPoP ...` and `DPoP: ...`;
                                json adds dpop_proof
                --id-token      the site's validated OpenID Connect ID token instead
                                (the site's scopes must include openid)
    login     Run consent for SITE now (browser + PKCE; --device shows a code to
              enter on another device; --paste reads the final URL from stdin).
    logout    Revoke SITE's tokens at the provider where possible; forget them here.
    status    Every site (or one): state, expiry, scopes, last refresh, last error, notes.
    exec      Run COMMAND with the token in $VAR (default TOKEN); with --dpop METHOD
              URL also the proof for that request in $DPOP.
    kube      Print a Kubernetes ExecCredential (client.authentication.k8s.io/v1);
              --id-token (or the site key kube_token = \"id_token\") puts the ID token
              in it, for clusters that authenticate users with OIDC.
    credential  The git credential helper: git config credential.helper token
              (the site is the one whose `hosts` lists the remote's host).
    completions  Print a completion script that also completes site names:
              bash: source <(token completions bash)   (e.g. in ~/.bashrc)
              zsh:  source <(token completions zsh)    fish: token completions fish | source
    reload    Re-read the config file now (tokend also watches it).
    stop      Ask the daemon to exit.

EXAMPLES:
    curl -H \"Authorization: Bearer $(token get corp)\" https://api.example.com/me
    curl -H \"$(token get corp --format header)\" https://api.example.com/me
    token exec corp -- terraform plan
    token exec corp --dpop GET https://api.example.com/me -- \
        sh -c 'curl -H \"Authorization: DPoP $TOKEN\" -H \"DPoP: $DPOP\" https://api.example.com/me'

ENVIRONMENT:
    TOKEND_SOCKET        socket path (default $XDG_RUNTIME_DIR/tokend/tokend.sock)
    TOKEND_CONFIG        config file (default: the platform config dir, tokend/config.toml)
    TOKEND_NO_AUTOSTART  1: never start tokend when none answers
    BROWSER              the command that opens login URLs

EXIT CODES:
    0 ok   1 unexpected error   2 usage or config error   3 login required but not
    allowed   4 the provider refused   5 the daemon is unreachable (or not yours)
    6 the login did not complete (timed out or cancelled)
    exec: COMMAND's own exit; 127 when it is not found, 126 when it cannot run
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Header,
    Json,
}

#[derive(Debug)]
pub struct GetArgs {
    pub site: String,
    pub min_ttl: Option<u64>,
    pub scopes: Vec<String>,
    pub format: Format,
    pub no_login: bool,
    /// `--dpop METHOD URL`: also a DPoP proof for that request.
    pub dpop: Option<(String, String)>,
    /// `--id-token`: the site's ID token instead of its access token.
    pub id_token: bool,
    /// Asked by `token kube` (the daemon applies the site's `kube_token`)
    /// or the git helper (its `min_ttl` is a built-in margin).
    pub purpose: Option<Purpose>,
}

#[derive(Debug)]
pub enum Command {
    Get(GetArgs),
    Login {
        site: String,
        mode: LoginMode,
    },
    Logout {
        site: String,
    },
    Status {
        site: Option<String>,
        json: bool,
    },
    Exec {
        get: GetArgs,
        var: String,
        argv: Vec<OsString>,
    },
    Kube {
        get: GetArgs,
    },
    Credential {
        action: String,
    },
    Completions {
        shell: String,
    },
    /// The configured site names, one a line (for completion scripts).
    Sites,
    Reload,
    Stop,
    Help,
    Version,
}

/// The commands, for "did you mean".
const COMMANDS: &[&str] = &[
    "get",
    "login",
    "logout",
    "status",
    "exec",
    "kube",
    "credential",
    "completions",
    "reload",
    "stop",
    "help",
];

/// The options of `get`, `kube` and `exec` (without the dashes).
fn get_options(cmd: &str) -> Vec<&'static str> {
    let mut known = vec!["min-ttl", "scope", "no-login", "id-token", "help"];
    match cmd {
        "get" => known.extend(["format", "dpop"]),
        "exec" => known.extend(["env", "dpop"]),
        _ => {}
    }
    known
}

/// An argument no parse arm took; a mistyped option gets the closest of
/// `known` (options without their dashes).
fn unexpected(arg: lexopt::Arg<'_>, known: &[&str]) -> ClientError {
    let hint = match &arg {
        Long(name) => {
            names::closest(name, known.iter().copied()).map(|k| format!("; did you mean `--{k}`?"))
        }
        Short(_) | Value(_) => None,
    };
    usage(format!("{}{}", arg.unexpected(), hint.unwrap_or_default()))
}

fn usage(msg: impl std::fmt::Display) -> ClientError {
    ClientError::Usage(format!("{msg} (see `token --help`)"))
}

fn from_lexopt(e: lexopt::Error) -> ClientError {
    usage(e)
}

pub fn parse(args: Vec<OsString>) -> Result<Command, ClientError> {
    if args.first().is_some_and(|a| a == "exec") {
        return parse_exec(args);
    }
    let mut p = lexopt::Parser::from_args(args);
    let sub = match p.next().map_err(from_lexopt)? {
        Some(Short('h') | Long("help")) | None => return Ok(Command::Help),
        Some(Short('V') | Long("version")) => return Ok(Command::Version),
        Some(Value(v)) => v.string().map_err(from_lexopt)?,
        Some(other) => return Err(usage(other.unexpected())),
    };
    match sub.as_str() {
        "get" => Ok(Command::Get(parse_get(&mut p, "get")?)),
        "kube" => Ok(Command::Kube {
            get: parse_get(&mut p, "kube")?,
        }),
        "login" => parse_login(&mut p),
        "credential" => {
            let action = only_site(&mut p, "credential")?;
            Ok(Command::Credential { action })
        }
        "completions" => Ok(Command::Completions {
            shell: only_site(&mut p, "completions")
                .map_err(|_| usage("`token completions` needs a shell: bash, zsh or fish"))?,
        }),
        "sites" => Ok(Command::Sites),
        "logout" => Ok(Command::Logout {
            site: only_site(&mut p, "logout")?,
        }),
        "status" => parse_status(&mut p),
        "reload" | "stop" => {
            if let Some(arg) = p.next().map_err(from_lexopt)? {
                if matches!(arg, Short('h') | Long("help")) {
                    return Ok(Command::Help);
                }
                return Err(usage(arg.unexpected()));
            }
            Ok(if sub == "reload" {
                Command::Reload
            } else {
                Command::Stop
            })
        }
        "help" => Ok(Command::Help),
        other => Err(usage(
            match names::closest(other, COMMANDS.iter().copied()) {
                Some(close) => format!("unknown command `{other}`; did you mean `{close}`?"),
                None => format!("unknown command `{other}`"),
            },
        )),
    }
}

fn parse_get(p: &mut lexopt::Parser, cmd: &str) -> Result<GetArgs, ClientError> {
    let mut site = None;
    let mut args = GetArgs {
        site: String::new(),
        min_ttl: None,
        scopes: Vec::new(),
        format: Format::Raw,
        no_login: false,
        dpop: None,
        id_token: false,
        purpose: (cmd == "kube").then_some(Purpose::Kube),
    };
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Long("min-ttl") => {
                let v = p
                    .value()
                    .map_err(from_lexopt)?
                    .string()
                    .map_err(from_lexopt)?;
                args.min_ttl = Some(parse_duration(&v).ok_or_else(|| {
                    usage(format!(
                        "--min-ttl `{v}` is not a duration like 300, 90s, 5m or 1h"
                    ))
                })?);
            }
            Long("scope") => {
                let v = p
                    .value()
                    .map_err(from_lexopt)?
                    .string()
                    .map_err(from_lexopt)?;
                args.scopes.push(v);
            }
            Long("format") if cmd == "get" => {
                let v = p
                    .value()
                    .map_err(from_lexopt)?
                    .string()
                    .map_err(from_lexopt)?;
                args.format = match v.as_str() {
                    "raw" => Format::Raw,
                    "header" => Format::Header,
                    "json" => Format::Json,
                    _ => return Err(usage(format!("--format `{v}`: use raw, header or json"))),
                };
            }
            Long("no-login") => args.no_login = true,
            Long("dpop") if cmd != "kube" => {
                let mut next = |what: &str| -> Result<String, ClientError> {
                    match p.value() {
                        Ok(v) => v.string().map_err(from_lexopt),
                        Err(_) => Err(usage(format!(
                            "--dpop needs a METHOD and a URL (e.g. --dpop GET https://api.example.com/me): the {what} is missing"
                        ))),
                    }
                };
                let method = next("METHOD")?;
                let url = next("URL")?;
                args.dpop = Some((method, url));
            }
            Long("id-token") => args.id_token = true,
            Short('h') | Long("help") => return Err(ClientError::Help),
            Value(v) if site.is_none() => site = Some(v.string().map_err(from_lexopt)?),
            other => return Err(unexpected(other, &get_options(cmd))),
        }
    }
    args.site = site.ok_or_else(|| usage(format!("`token {cmd}` needs a SITE")))?;
    Ok(args)
}

fn parse_exec(args: Vec<OsString>) -> Result<Command, ClientError> {
    let Some(dash) = args.iter().position(|a| a == "--") else {
        return Err(usage(match command_start(&args) {
            Some(i) => {
                let (head, command) = args.split_at(i);
                let show = |a: &[OsString]| {
                    a.iter()
                        .map(|w| shell_word(&w.to_string_lossy()))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                format!(
                    "`token exec SITE [--env VAR] -- COMMAND...`: the `--` before the COMMAND is missing: `token {} -- {}`",
                    show(head),
                    show(command)
                )
            }
            None => "`token exec SITE [--env VAR] -- COMMAND...`: the `--` and COMMAND are missing"
                .to_owned(),
        }));
    };
    let mut before = args;
    let argv = before.split_off(dash + 1);
    before.pop();
    if argv.is_empty() {
        return Err(usage(
            "`token exec SITE -- COMMAND`: the COMMAND is missing",
        ));
    }
    // Pull `--env VAR` out; the rest are `get` options.
    let mut var = "TOKEN".to_owned();
    let mut rest = Vec::new();
    let mut it = before.into_iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--env" {
            let v = it
                .next()
                .ok_or_else(|| usage("--env needs a variable name"))?;
            var = v
                .into_string()
                .map_err(|_| usage("--env VAR must be UTF-8"))?;
            if var.is_empty() || var.contains('=') {
                return Err(usage(format!("--env `{var}` is not a variable name")));
            }
        } else {
            rest.push(a);
        }
    }
    let get = parse_get(&mut lexopt::Parser::from_args(rest), "exec")?;
    Ok(Command::Exec { get, var, argv })
}

/// `word` as a POSIX shell would need it typed: as is when it is plain,
/// else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Where a COMMAND starts in `exec SITE [options] COMMAND...` written
/// without the `--`: the second word that is neither an option nor an
/// option's value.
fn command_start(args: &[OsString]) -> Option<usize> {
    let mut words = 0;
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        let values = match a.as_ref() {
            "--min-ttl" | "--scope" | "--env" => 1,
            "--dpop" => 2,
            _ => 0,
        };
        if values == 0 && !a.starts_with('-') {
            words += 1;
            if words == 2 {
                return Some(i);
            }
        }
        i += 1 + values;
    }
    None
}

fn parse_login(p: &mut lexopt::Parser) -> Result<Command, ClientError> {
    let mut site = None;
    let mut mode = LoginMode::Browser;
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Long("device") => mode = LoginMode::Device,
            Long("paste") => mode = LoginMode::Paste,
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(v) if site.is_none() => site = Some(v.string().map_err(from_lexopt)?),
            other => return Err(unexpected(other, &["device", "paste", "help"])),
        }
    }
    let site = site.ok_or_else(|| usage("`token login` needs a SITE"))?;
    Ok(Command::Login { site, mode })
}

fn parse_status(p: &mut lexopt::Parser) -> Result<Command, ClientError> {
    let mut site = None;
    let mut json = false;
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Long("json") => json = true,
            Short('h') | Long("help") => return Ok(Command::Help),
            Value(v) if site.is_none() => site = Some(v.string().map_err(from_lexopt)?),
            other => return Err(unexpected(other, &["json", "help"])),
        }
    }
    Ok(Command::Status { site, json })
}

fn only_site(p: &mut lexopt::Parser, cmd: &str) -> Result<String, ClientError> {
    let mut site = None;
    while let Some(arg) = p.next().map_err(from_lexopt)? {
        match arg {
            Value(v) if site.is_none() => site = Some(v.string().map_err(from_lexopt)?),
            other => return Err(usage(other.unexpected())),
        }
    }
    site.ok_or_else(|| usage(format!("`token {cmd}` needs a SITE")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Command, ClientError> {
        parse(s.split_whitespace().map(OsString::from).collect())
    }

    #[test]
    fn get_with_everything() {
        let Command::Get(g) =
            parse_str("get corp --min-ttl 5m --scope a --scope b --format json --no-login")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(g.site, "corp");
        assert_eq!(g.min_ttl, Some(300));
        assert_eq!(g.scopes, ["a", "b"]);
        assert_eq!(g.format, Format::Json);
        assert!(g.no_login);
        assert!(!g.id_token && g.purpose.is_none());
        let Command::Kube { get } = parse_str("kube corp --id-token").unwrap() else {
            panic!()
        };
        assert!(get.id_token && get.purpose == Some(Purpose::Kube));
    }

    #[test]
    fn usage_errors_exit_2() {
        for bad in [
            "get",
            "get a b",
            "get a --format xml",
            "frobnicate",
            "login",
            "exec a",
        ] {
            let e = parse_str(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn dpop_takes_a_method_and_a_url() {
        let Command::Get(g) =
            parse_str("get corp --dpop GET https://api.example/me --format header").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            g.dpop,
            Some(("GET".to_owned(), "https://api.example/me".to_owned()))
        );
        assert_eq!(g.format, Format::Header);
        let Command::Exec { get, .. } =
            parse_str("exec corp --dpop POST https://a.example/x -- true").unwrap()
        else {
            panic!()
        };
        assert_eq!(get.dpop.unwrap().0, "POST");
        for bad in [
            "get corp --dpop",
            "get corp --dpop GET",
            "kube corp --dpop GET https://a/",
        ] {
            assert_eq!(parse_str(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }

    fn usage_text(s: &str) -> String {
        let e = parse_str(s).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{s}");
        e.to_string()
    }

    #[test]
    fn mistyped_commands_and_options_get_the_right_spelling() {
        assert!(usage_text("gett corp").contains("did you mean `get`?"));
        assert!(usage_text("get corp --formt json").contains("did you mean `--format`?"));
        assert!(usage_text("status --jsn").contains("did you mean `--json`?"));
        assert!(!usage_text("frobnicate").contains("did you mean"));
    }

    #[test]
    fn exec_without_the_double_dash_says_only_that_it_is_missing() {
        let e = usage_text("exec corp sh -c true");
        assert!(
            e.contains("the `--` before the COMMAND is missing: `token exec corp -- sh -c true`"),
            "{e}"
        );
        let e = usage_text("exec corp --env GH --min-ttl 5m curl x");
        assert!(
            e.contains("`token exec corp --env GH --min-ttl 5m -- curl x`"),
            "{e}"
        );
        let e = parse(
            ["exec", "corp", "sh", "-c", "echo \"$TOKEN\" it's"]
                .map(OsString::from)
                .to_vec(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(r#"`token exec corp -- sh -c 'echo "$TOKEN" it'\''s'`"#),
            "{e}"
        );
        let e = usage_text("exec corp --min-ttl 5m");
        assert!(e.contains("the `--` and COMMAND are missing"), "{e}");
    }

    #[test]
    fn exec_splits_at_double_dash() {
        let Command::Exec { get, var, argv } =
            parse_str("exec corp --env GH -- curl -H x").unwrap()
        else {
            panic!()
        };
        assert_eq!(get.site, "corp");
        assert_eq!(var, "GH");
        assert_eq!(argv, ["curl", "-H", "x"]);
    }
}
