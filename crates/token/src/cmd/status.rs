//! `token status [SITE]`: every site's state as a table, or as JSON.

use token_proto::{Op, StatusReply, StatusRequest};

use super::{events::show_event, from_reply, print};
use crate::conn::Conn;
use crate::time::{human_duration, now_unix};
use crate::ClientError;
use token_text::clean;

pub fn run(site: Option<String>, json: bool) -> Result<u8, ClientError> {
    let v = Conn::request(Op::Status(StatusRequest { site }), show_event)?;
    let reply: StatusReply = from_reply(v)?;
    if json {
        let text = serde_json::to_string_pretty(&reply).unwrap_or_default();
        print(&format!("{text}\n"))
    } else {
        print(&status_table(&reply))
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
        "NOTES".to_owned(),
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
        // Errors in their column; what is worth knowing but went right (not
        // persisted, fewer scopes granted than configured) in its own.
        let error = s
            .last_error
            .as_deref()
            .map_or("-".to_owned(), |e| clean(e, 500));
        let mut notes: Vec<String> = s.notes.iter().map(|t| clean(t, 500)).collect();
        if let Some(until) = s.login_cooldown_until {
            notes.push(format!(
                "login cooldown: callers without a terminal start no login for {} (`token login {}` ends it)",
                human_duration((until as i64 - now).max(1)),
                s.site
            ));
        }
        let notes = if notes.is_empty() {
            "-".to_owned()
        } else {
            notes.join("; ")
        };
        rows.push([
            s.site.clone(),
            s.state.replace('_', " "),
            expires,
            scopes,
            last,
            next,
            error,
            notes,
        ]);
    }
    let mut widths = [0usize; 8];
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
        // A file that does not parse has its error above, not "no sites".
        if reply.config_errors.is_empty() {
            out.push_str("no sites configured: add a [site.NAME] table to the config file\n");
        }
        return out;
    }
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i == widths.len() - 1 {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&files_lines(reply, now));
    out
}

/// Under the table, a line per token file: where, which format, when the
/// current token was written there, or why it could not be.
fn files_lines(reply: &StatusReply, now: i64) -> String {
    let mut out = String::new();
    for s in &reply.sites {
        for f in &s.files {
            let how = match (&f.error, f.written_at) {
                (Some(e), _) => format!("cannot be written (retrying): {}", clean(e, 500)),
                (None, Some(t)) => {
                    format!("written {} ago", human_duration((now - t as i64).max(1)))
                }
                (None, None) => "not written yet (no login)".to_owned(),
            };
            out.push_str(&format!(
                "file of {}: {} ({}): {how}\n",
                s.site,
                clean(&f.path, 500),
                clean(&f.format, 20)
            ));
        }
    }
    out
}
