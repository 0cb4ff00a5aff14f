//! Workload identity keys of a site (DESIGN "Fleets without stored
//! secrets"): the client's signing key, federated client assertions, the
//! jwt-bearer grant's assertion and token exchange's subject. None holds a
//! secret: they name where a key or signed token is, read at each call.

use std::path::PathBuf;

use token_proto::TokenKind;
use tokend_oauth::exchange::token_type_uri;
use tokend_oauth::{AssertionFrom, AssertionSource};

use super::{ClientAuth, Fields, Grant, SiteConfig};
use crate::config::ConfigError;

/// The keys this module reads, as a list and as a `match` (see `site_keys`).
macro_rules! workload_keys {
    ($($k:literal,)*) => {
        pub(super) const KEYS: &[&str] = &[$($k,)*];

        /// `k` as the workload key it is, if it is one.
        pub(super) fn key(k: &str) -> Option<&'static str> {
            match k {
                $($k => Some($k),)*
                _ => None,
            }
        }
    };
}

workload_keys! {
    "client_key_file",
    "client_key_id",
    "client_assertion_file",
    "client_assertion_cmd",
    "client_assertion_source",
    "assertion_audience",
    "assertion_file",
    "assertion_cmd",
    "assertion_source",
    "subject_site",
    "subject_token",
    "subject_token_file",
    "subject_token_cmd",
    "subject_token_type",
    "actor_token_file",
    "actor_token_type",
    "audience",
    "resource",
    "requested_token_type",
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Workload {
    /// `client_key_file`: the private_key_jwt key (PEM), `client_key_id`.
    pub client_key: Option<(PathBuf, Option<String>)>,
    /// A federated client assertion.
    pub client_assertion: Option<AssertionSource>,
    /// The jwt-bearer grant's assertion.
    pub assertion: Option<AssertionSource>,
    pub exchange: Option<Exchange>,
}

/// A site's [`Workload`], boxed only when it has one: most sites have
/// none, and an empty box a site is 0.4 KiB for every thousand sites
/// (heaptrack, 1000 sites). Reads as a `Workload` (an empty one when none).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Workloads(Option<Box<Workload>>);

impl Workloads {
    pub(crate) fn new(w: Workload) -> Workloads {
        Workloads((w != Workload::default()).then(|| Box::new(w)))
    }
}

impl std::ops::Deref for Workloads {
    type Target = Workload;
    fn deref(&self) -> &Workload {
        static NONE: Workload = Workload {
            client_key: None,
            client_assertion: None,
            assertion: None,
            exchange: None,
        };
        self.0.as_deref().unwrap_or(&NONE)
    }
}

/// An RFC 8693 exchange as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exchange {
    pub subject: Subject,
    /// A full URI.
    pub subject_token_type: String,
    pub actor: Option<(AssertionSource, String)>,
    pub audience: Option<String>,
    pub resources: Vec<String>,
    pub requested_token_type: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    /// Another site's access or ID token.
    Site {
        name: String,
        kind: TokenKind,
    },
    Source(AssertionSource),
}

/// The three keys of one assertion source: `PREFIX_file`, `PREFIX_cmd`,
/// `PREFIX_source`. Written out, not formatted: every site's table is
/// asked for them at each start.
struct SourceKeys {
    file: &'static str,
    cmd: &'static str,
    source: &'static str,
}

const CLIENT_ASSERTION: SourceKeys = SourceKeys {
    file: "client_assertion_file",
    cmd: "client_assertion_cmd",
    source: "client_assertion_source",
};
const ASSERTION: SourceKeys = SourceKeys {
    file: "assertion_file",
    cmd: "assertion_cmd",
    source: "assertion_source",
};
/// `subject_token_source` is no key (only files and commands hold a subject).
const SUBJECT_TOKEN: SourceKeys = SourceKeys {
    file: "subject_token_file",
    cmd: "subject_token_cmd",
    source: "subject_token_source",
};

impl Fields<'_> {
    /// One of `PREFIX_file`, `PREFIX_cmd`, `PREFIX_source` (only
    /// `"github_actions"`, with `assertion_audience`), at most one.
    fn assertion_source(
        &mut self,
        keys: &SourceKeys,
        audience: Option<&str>,
        source_allowed: bool,
    ) -> Result<Option<AssertionSource>, ConfigError> {
        let SourceKeys {
            file: file_key,
            cmd: cmd_key,
            source: source_key,
        } = *keys;
        let file = self.string(file_key)?;
        let cmd = self.string(cmd_key)?;
        let source = if source_allowed {
            self.choice(source_key, [("github_actions", ())])?
        } else {
            None
        };
        let given = [file.is_some(), cmd.is_some(), source.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            let at = self.at_of(cmd_key).max(self.at_of(file_key));
            return Err(self.err(
                at,
                file_key,
                format!("give one of {file_key}, {cmd_key} or {source_key}, not several"),
            ));
        }
        if let Some(path) = file {
            return Ok(Some(AssertionSource::new(
                file_key,
                AssertionFrom::File(expand_home(&path)),
            )));
        }
        if let Some(cmd) = cmd {
            return Ok(Some(AssertionSource::new(cmd_key, AssertionFrom::Cmd(cmd))));
        }
        if source.is_some() {
            let Some(audience) = audience else {
                return Err(self.err(
                    self.at_of(source_key),
                    "assertion_audience",
                    "missing: a GitHub Actions token is asked for an audience; set assertion_audience to the one the provider expects (e.g. \"api://AzureADTokenExchange\")",
                ));
            };
            return Ok(Some(AssertionSource::new(
                source_key,
                AssertionFrom::GithubActions {
                    audience: audience.to_owned(),
                },
            )));
        }
        Ok(None)
    }

    /// The workload keys of the table (none, for most sites).
    pub(super) fn workload(&mut self) -> Result<Workload, ConfigError> {
        // With every key taken (most sites), each one asked for below is
        // answered without a look.
        if self.left == 0 {
            return Ok(Workload::default());
        }
        let audience = self.string("assertion_audience")?;
        let client_key = self
            .string("client_key_file")?
            .map(|p| expand_home(&p))
            .map(|p| Ok::<_, ConfigError>((p, self.string("client_key_id")?)))
            .transpose()?;
        let client_assertion =
            self.assertion_source(&CLIENT_ASSERTION, audience.as_deref(), true)?;
        let assertion = self.assertion_source(&ASSERTION, audience.as_deref(), true)?;
        let exchange = self.exchange()?;
        Ok(Workload {
            client_key,
            client_assertion,
            assertion,
            exchange,
        })
    }

    fn exchange(&mut self) -> Result<Option<Exchange>, ConfigError> {
        let subject_site = self.string("subject_site")?;
        let subject_token_at = self.at_of("subject_token");
        let kind = self.choice(
            "subject_token",
            [
                ("access_token", TokenKind::AccessToken),
                ("id_token", TokenKind::IdToken),
            ],
        )?;
        let source = self.assertion_source(&SUBJECT_TOKEN, None, false)?;
        let type_at = self.at_of("subject_token_type");
        let written_type = self.string("subject_token_type")?;
        let subject = match (subject_site, source) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    self.at_of("subject_site"),
                    "subject_site",
                    "give subject_site or subject_token_file / subject_token_cmd, not both",
                ))
            }
            (Some(name), None) => Subject::Site {
                name,
                kind: kind.unwrap_or_default(),
            },
            (None, Some(src)) => {
                if kind.is_some() {
                    return Err(self.err(
                        subject_token_at,
                        "subject_token",
                        "subject_token picks another site's token: it needs subject_site",
                    ));
                }
                Subject::Source(src)
            }
            (None, None) => return Ok(None),
        };
        let subject_token_type = match (&subject, written_type) {
            (_, Some(t)) => token_type_uri(&t),
            (Subject::Site { kind, .. }, None) => token_type_uri(match kind {
                TokenKind::IdToken => "id_token",
                TokenKind::AccessToken => "access_token",
            }),
            (Subject::Source(_), None) => {
                return Err(self.err(
                    type_at,
                    "subject_token_type",
                    "missing: say what the subject token is (\"access_token\", \"id_token\", \"jwt\" or a full urn:ietf:params:oauth:token-type:… URI)",
                ))
            }
        };
        let actor_file = self.string("actor_token_file")?;
        let actor_type = self.string("actor_token_type")?;
        let actor = actor_file.map(|p| {
            (
                AssertionSource::new("actor_token_file", AssertionFrom::File(expand_home(&p))),
                token_type_uri(actor_type.as_deref().unwrap_or("jwt")),
            )
        });
        Ok(Some(Exchange {
            subject,
            subject_token_type,
            actor,
            audience: self.string("audience")?,
            resources: self.strings("resource")?,
            requested_token_type: self
                .string("requested_token_type")?
                .map(|t| token_type_uri(&t)),
        }))
    }
}

/// `~/x` is `$HOME/x`: configs are shared between machines.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Cross-key checks of the workload keys (after the grant is known).
pub(super) fn validate(f: &Fields<'_>, site: &SiteConfig) -> Result<(), ConfigError> {
    let w = &site.workload;
    let at = f.header_at;
    if w.client_key.is_some() && w.client_assertion.is_some() {
        return Err(f.err(
            f.at_of("client_key_file"),
            "client_key_file",
            "give client_key_file (private_key_jwt) or a client_assertion_* key, not both",
        ));
    }
    match site.client_auth {
        Some(ClientAuth::PrivateKeyJwt) if w.client_key.is_none() => {
            return Err(f.err(
                f.at_of("client_auth"),
                "client_auth",
                "private_key_jwt needs client_key_file = \"PATH\" (a PEM EC P-256 or RSA private key, private to you)",
            ))
        }
        Some(ClientAuth::Assertion) if w.client_assertion.is_none() => {
            return Err(f.err(
                f.at_of("client_auth"),
                "client_auth",
                "client_assertion needs client_assertion_file, client_assertion_cmd or client_assertion_source",
            ))
        }
        Some(other) if other != ClientAuth::PrivateKeyJwt && w.client_key.is_some() => {
            return Err(f.err(
                f.at_of("client_key_file"),
                "client_key_file",
                "client_key_file is for client_auth = \"private_key_jwt\"",
            ))
        }
        _ => {}
    }
    if (w.client_key.is_some() || w.client_assertion.is_some()) && site.secret.is_some() {
        return Err(f.err(
            at,
            "client_secret_env",
            "a site authenticates with a client secret or with a key / assertion, not both",
        ));
    }
    let needs = |key: &str, what: &str| Err(f.err(at, key, what.to_owned()));
    match site.grant {
        Grant::JwtBearer if w.assertion.is_none() => needs(
            "assertion_file",
            "grant = \"jwt_bearer\" needs its assertion: assertion_file, assertion_cmd or assertion_source = \"github_actions\"",
        ),
        Grant::TokenExchange if w.exchange.is_none() => needs(
            "subject_site",
            "grant = \"token_exchange\" needs a subject: subject_site = \"SITE\", or subject_token_file / subject_token_cmd with subject_token_type",
        ),
        Grant::JwtBearer | Grant::TokenExchange => Ok(()),
        _ if w.assertion.is_some() => needs(
            "assertion_file",
            "assertion_file / assertion_cmd / assertion_source are for grant = \"jwt_bearer\"",
        ),
        _ if w.exchange.is_some() => needs(
            "subject_site",
            "subject_* keys are for grant = \"token_exchange\"",
        ),
        _ => Ok(()),
    }
}
