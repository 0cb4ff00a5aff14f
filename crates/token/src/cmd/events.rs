//! What the daemon says while a caller waits (a login URL, a device code),
//! shown on stderr, and the paste-back login's reading of stdin.

use std::io::Write;

use token_proto::{Event, Op, PasteRequest};

use crate::conn::Conn;
use crate::time::human_duration;
use crate::{browser, platform, ClientError};
use token_text::clean;

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

pub(crate) fn show_event(ev: &Event) -> Result<(), ClientError> {
    let ev = &clean_event(ev);
    if let Event::LoginUrl { site, .. }
    | Event::DeviceCode { site, .. }
    | Event::PasteUrl { site, .. } = ev
    {
        cancel_on_ctrl_c(site);
    }
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
                match browser::open(url) {
                    Ok(opener) => {
                        // Said the moment the opener fails, not after the
                        // login's whole timeout.
                        let site = site.clone();
                        std::thread::spawn(move || {
                            if let Some(why) = opener.failure() {
                                let mut err = std::io::stderr().lock();
                                let _ = writeln!(err, "{}", no_browser(&site, &why));
                            }
                        });
                    }
                    Err(e) => {
                        let _ = writeln!(err, "{}", no_browser(site, &e));
                    }
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

/// What a caller whose browser cannot open can do instead.
fn no_browser(site: &str, why: &str) -> String {
    format!(
        "{}token: {why}.\n       Open the URL above by hand, or set BROWSER to a command that opens URLs, \
         or log in without a browser here: `token login {site} --device` (where the provider \
         offers device login) or `token login {site} --paste`",
        fresh_line()
    )
}

/// What starts a line of ours on stderr: on a terminal, a return and an
/// erase over the countdown line (and an echoed `^C`) it may interrupt.
fn fresh_line() -> &'static str {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        "\r\x1b[K"
    } else {
        ""
    }
}

/// While this caller waits for a login, Ctrl-C ends it as a cancelled
/// login: one line, exit 6 (the daemon cancels it when we hang up).
fn cancel_on_ctrl_c(site: &str) {
    platform::exit_on_interrupt(
        format!(
            "{}token: site {site}: login cancelled (Ctrl-C); run `token login {site}` to try again\n",
            fresh_line()
        ),
        token_proto::ErrorCode::LoginIncomplete.exit_code(),
    );
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
