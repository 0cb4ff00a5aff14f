//! Signed assertions that someone else issued: a Kubernetes projected
//! service-account token, a cloud's workload identity token, a GitHub
//! Actions OIDC token. tokend stores none of them: each call reads one
//! afresh (the file rotates, the job's token expires), then sends it as a
//! client assertion, a jwt-bearer grant or a token-exchange subject.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use url::Url;
use zeroize::Zeroizing;

use crate::error::{loggable_url, Error};
use crate::http::{FormRequest, Http};
use crate::response::{self, str_field};
use crate::secret::Assertion;

/// The most an assertion file or command may hold: no signed token is that
/// big, and the daemon must not buffer without bound.
pub const MAX_ASSERTION: u64 = 1024 * 1024;

/// How long a command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an assertion comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssertionFrom {
    /// Read afresh for every call.
    File(PathBuf),
    /// Run (by `sh -c`, `cmd /C` on Windows) for every call; its stdout.
    Cmd(String),
    /// The job's OIDC token: GET `$ACTIONS_ID_TOKEN_REQUEST_URL&audience=…`
    /// with `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, the
    /// JSON `value`.
    GithubActions { audience: String },
}

/// An assertion source and the config key that set it (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionSource {
    /// e.g. `client_assertion_file`, `assertion_cmd`, `subject_token_file`.
    pub key: String,
    pub from: AssertionFrom,
}

impl AssertionSource {
    pub fn new(key: impl Into<String>, from: AssertionFrom) -> AssertionSource {
        AssertionSource {
            key: key.into(),
            from,
        }
    }

    /// Where it comes from, for messages: `client_assertion_file /var/run/token`.
    pub fn described(&self) -> String {
        match &self.from {
            AssertionFrom::File(path) => format!("{} {}", self.key, path.display()),
            AssertionFrom::Cmd(cmd) => format!("{} `{cmd}`", self.key),
            AssertionFrom::GithubActions { audience } => {
                format!("{} = \"github_actions\" (audience {audience})", self.key)
            }
        }
    }

    /// One assertion, fresh. Errors name the source and what to do.
    pub async fn fetch(&self, http: &Http) -> Result<Assertion, Error> {
        let fail = |what: String| Error::Assertion(format!("{}: {what}", self.described()));
        let bytes = match &self.from {
            AssertionFrom::File(path) => read_capped(path).await.map_err(|e| {
                fail(match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        "the file does not exist (is the token projected or mounted there?)"
                            .to_owned()
                    }
                    _ => format!("cannot read it: {e}"),
                })
            })?,
            AssertionFrom::Cmd(cmd) => run_command(cmd, MAX_ASSERTION).await.map_err(fail)?,
            AssertionFrom::GithubActions { audience } => {
                return github_actions(http, audience).await.map_err(fail)
            }
        };
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| fail("it is not UTF-8 text".to_owned()))?
            .trim();
        check_assertion(text).map_err(|w| fail(w.to_owned()))
    }
}

/// An assertion tokend will send: one line of token characters, capped.
fn check_assertion(text: &str) -> Result<Assertion, &'static str> {
    if text.len() as u64 > MAX_ASSERTION {
        return Err("it is larger than 1 MiB; it must hold only the token");
    }
    if text.is_empty() {
        return Err("it is empty");
    }
    if !text.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("it holds spaces or control characters; it must hold only the token");
    }
    Ok(Assertion::new(text.to_owned()))
}

async fn read_capped(path: &std::path::Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let file = tokio::fs::File::open(path).await?;
    let mut out = Zeroizing::new(Vec::new());
    file.take(MAX_ASSERTION + 1).read_to_end(&mut out).await?;
    if out.len() as u64 > MAX_ASSERTION {
        return Err(std::io::Error::other(
            "it is larger than 1 MiB; it must hold only the token",
        ));
    }
    Ok(out)
}

/// Runs `cmd` by the platform's shell with no stdin and stderr discarded;
/// its stdout, at most `cap` bytes (more is an error), wiped on drop.
/// Errors say what failed, for a message that names the command.
pub async fn run_command(cmd: &str, cap: u64) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut command = if cfg!(windows) {
        let mut c = tokio::process::Command::new("cmd");
        c.arg("/C").arg(cmd);
        c
    } else {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(cmd);
        c
    };
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let run = async {
        let mut child = command.spawn()?;
        let mut out = Zeroizing::new(Vec::new());
        if let Some(stdout) = child.stdout.take() {
            // One byte past the cap tells a command that prints too much.
            stdout.take(cap + 1).read_to_end(&mut out).await?;
        }
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, out))
    };
    let secs = COMMAND_TIMEOUT.as_secs();
    let (status, out) = tokio::time::timeout(COMMAND_TIMEOUT, run)
        .await
        .map_err(|_| format!("the command did not finish in {secs} s"))?
        .map_err(|e| format!("the command could not run: {e}"))?;
    if out.len() as u64 > cap {
        return Err(format!(
            "the command printed more than {}; it must print only the token",
            human(cap)
        ));
    }
    if !status.success() {
        return Err(format!("the command failed ({status})"));
    }
    Ok(out)
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * 1024 && b % (1024 * 1024) == 0 => format!("{} MiB", b / (1024 * 1024)),
        b if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

/// The GitHub Actions job's OIDC token for `audience`.
async fn github_actions(http: &Http, audience: &str) -> Result<Assertion, String> {
    let var = |name: &str| {
        std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
            format!(
                "{name} is not set in tokend's environment: run tokend inside the job, and give the job `permissions: id-token: write`"
            )
        })
    };
    let base = var("ACTIONS_ID_TOKEN_REQUEST_URL")?;
    let bearer = Zeroizing::new(var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")?);
    let url = github_actions_url(&base, audience)?;
    let mut request = FormRequest::get(url);
    request.header("Authorization", &format!("bearer {}", bearer.as_str()));
    let shown = loggable_url(&request.url);
    let raw = http.send(&request).await.map_err(|e| e.to_string())?;
    let fields = response::fields(
        raw.status,
        raw.content_type.as_deref(),
        &raw.body,
        "the GitHub Actions token endpoint",
    )
    .map_err(|e| format!("{shown}: {e}"))?;
    if !(200..300).contains(&raw.status) {
        return Err(format!("{shown} answered HTTP {}", raw.status));
    }
    let value =
        str_field(&fields, "value").ok_or_else(|| format!("{shown} answered without `value`"))?;
    check_assertion(value).map_err(|w| format!("the token from {shown}: {w}"))
}

/// `ACTIONS_ID_TOKEN_REQUEST_URL` already has a query (`?api-version=…`):
/// the audience is appended to it.
fn github_actions_url(base: &str, audience: &str) -> Result<Url, String> {
    let mut url =
        Url::parse(base).map_err(|e| format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL ({e})"))?;
    if !crate::tls_or_loopback(&url) {
        return Err("ACTIONS_ID_TOKEN_REQUEST_URL is not https".to_owned());
    }
    url.query_pairs_mut().append_pair("audience", audience);
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_audience_joins_the_job_query() {
        let url = github_actions_url(
            "https://pipelines.actions.githubusercontent.com/abc/idtoken?api-version=2.0",
            "api://AzureADTokenExchange",
        )
        .unwrap();
        assert_eq!(
            url.query(),
            Some("api-version=2.0&audience=api%3A%2F%2FAzureADTokenExchange")
        );
        assert!(github_actions_url("http://example.com/x", "a").is_err());
    }

    #[test]
    fn an_assertion_is_one_token() {
        assert_eq!(check_assertion("a.b.c").unwrap().expose(), "a.b.c");
        assert!(check_assertion("").is_err());
        assert!(check_assertion("a b").is_err());
        assert!(check_assertion("a\u{1b}b").is_err());
    }

    #[tokio::test]
    async fn files_and_commands_are_read_afresh_and_capped() {
        let http = Http::new();
        let dir = std::env::temp_dir().join(format!("tokend-assert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let src = AssertionSource::new("client_assertion_file", AssertionFrom::File(path.clone()));
        let err = src.fetch(&http).await.unwrap_err().to_string();
        assert!(
            err.contains("client_assertion_file") && err.contains("does not exist"),
            "{err}"
        );
        std::fs::write(&path, "one.two.three\n").unwrap();
        assert_eq!(src.fetch(&http).await.unwrap().expose(), "one.two.three");
        std::fs::write(&path, "four.five.six").unwrap();
        assert_eq!(src.fetch(&http).await.unwrap().expose(), "four.five.six");
        std::fs::remove_dir_all(&dir).unwrap();

        if cfg!(unix) {
            let cmd = |c: &str| AssertionSource::new("assertion_cmd", AssertionFrom::Cmd(c.into()));
            assert_eq!(
                cmd("echo x.y.z").fetch(&http).await.unwrap().expose(),
                "x.y.z"
            );
            let err = cmd("exit 3").fetch(&http).await.unwrap_err().to_string();
            assert!(
                err.contains("assertion_cmd `exit 3`") && err.contains("failed"),
                "{err}"
            );
            let err = cmd("head -c 1048577 /dev/zero | tr '\\0' a")
                .fetch(&http)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("more than 1 MiB"), "{err}");
        }
    }
}
