//! The `[daemon]` table: the daemon's own settings, so they no longer depend
//! on which shell happened to start it. Environment variables
//! (`TOKEND_STORE`, `TOKEND_LOG`, `TOKEND_LOGIN_TIMEOUT`) still win.

use std::path::Path;

use token_proto::parse_duration;
use toml::Value;

use super::{ConfigError, Lines, RawTable};

/// Where logins persist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Keyring,
    File,
    Memory,
}

impl StoreKind {
    pub(crate) fn parse(s: &str) -> Option<StoreKind> {
        match s {
            "keyring" => Some(StoreKind::Keyring),
            "file" => Some(StoreKind::File),
            "memory" => Some(StoreKind::Memory),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::Keyring => "keyring",
            StoreKind::File => "file",
            StoreKind::Memory => "memory",
        }
    }
}

/// `[daemon]`, as written; `None` fields fall back to the environment or
/// the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DaemonSettings {
    pub store: Option<StoreKind>,
    /// A log filter (`info`, `debug`, `tokend=trace`).
    pub log: Option<String>,
    /// Seconds a login waits for the user.
    pub login_timeout: Option<u64>,
    /// Seconds after a login that went unanswered during which callers
    /// without a terminal start none (`0`: no cooldown).
    pub login_cooldown: Option<u64>,
    /// Seconds a removed site's login stays in the store (see
    /// `crate::store::prune`).
    pub prune_after: Option<u64>,
}

pub(super) fn parse_daemon(
    path: &Path,
    lines: &Lines,
    raw: RawTable,
) -> Result<DaemonSettings, ConfigError> {
    let err = |line: usize, key: &str, message: String| ConfigError {
        path: path.to_owned(),
        line: Some(line),
        site: None,
        key: Some(format!("daemon.{key}")),
        message,
    };
    let mut settings = DaemonSettings::default();
    for (key, value) in raw {
        let line = lines.of(key.span().start);
        let key = key.into_inner();
        let value = value.into_inner();
        match (&*key, value) {
            ("store", Value::String(s)) => {
                settings.store = Some(StoreKind::parse(&s).ok_or_else(|| {
                    err(
                        line,
                        &key,
                        format!("`{s}` is not one of \"keyring\", \"file\", \"memory\""),
                    )
                })?);
            }
            ("log", Value::String(s)) if !s.trim().is_empty() => settings.log = Some(s),
            ("login_timeout", Value::String(s)) => {
                settings.login_timeout =
                    Some(parse_duration(&s).filter(|&n| n > 0).ok_or_else(|| {
                        err(
                            line,
                            &key,
                            format!("`{s}` is not a duration like \"90s\" or \"5m\""),
                        )
                    })?);
            }
            ("login_timeout", Value::Integer(n)) if n > 0 => {
                settings.login_timeout = u64::try_from(n).ok();
            }
            ("login_cooldown", Value::String(s)) => {
                settings.login_cooldown = Some(parse_duration(&s).ok_or_else(|| {
                    err(
                        line,
                        &key,
                        format!("`{s}` is not a duration like \"15m\" or \"0s\" (none)"),
                    )
                })?);
            }
            ("login_cooldown", Value::Integer(n)) if n >= 0 => {
                settings.login_cooldown = u64::try_from(n).ok();
            }
            ("prune_after", Value::String(s)) => {
                settings.prune_after = Some(parse_duration(&s).ok_or_else(|| {
                    err(
                        line,
                        &key,
                        format!("`{s}` is not a duration like \"7d\", \"12h\" or \"0s\""),
                    )
                })?);
            }
            ("prune_after", Value::Integer(n)) if n >= 0 => {
                settings.prune_after = u64::try_from(n).ok();
            }
            ("store" | "log" | "login_timeout" | "login_cooldown" | "prune_after", other) => {
                return Err(err(line, &key, format!("unexpected {}", other.type_str())))
            }
            (other, _) => {
                return Err(err(
                    line,
                    other,
                    "unknown key; [daemon] takes store, log, login_timeout, login_cooldown and prune_after"
                        .to_owned(),
                ))
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::Config;
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("/c.toml"), text)
    }

    #[test]
    fn the_daemon_table() {
        let c = parse(
            "[daemon]\nstore = \"file\"\nlog = \"debug\"\nlogin_timeout = \"2m\"\nlogin_cooldown = \"1h\"\n",
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(
            c.daemon,
            DaemonSettings {
                store: Some(StoreKind::File),
                log: Some("debug".into()),
                login_timeout: Some(120),
                login_cooldown: Some(3600),
                prune_after: None,
            }
        );
        let c = parse("[daemon]\nstore = \"vault\"\n");
        assert_eq!(c.errors[0].to_string(), "/c.toml:2: key `daemon.store`: `vault` is not one of \"keyring\", \"file\", \"memory\"");
        let c = parse("[daemon]\nlogin_cooldown = \"soon\"\n");
        assert!(c.errors[0]
            .to_string()
            .contains("key `daemon.login_cooldown`"));
        let c = parse("\n[daemon]\nstroe = \"file\"\n");
        assert!(c.errors[0]
            .to_string()
            .starts_with("/c.toml:3: key `daemon.stroe`: unknown key"));
    }
}
