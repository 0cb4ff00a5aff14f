//! `[[site.NAME.file]]`: token files kept fresh for programs that read a
//! token from a file (Azure's `AZURE_FEDERATED_TOKEN_FILE`, AWS's
//! `web_identity_token_file`, a kubeconfig `tokenFile`, `curl -H @FILE`).
//!
//! The site's actor calls [`sync`] after everything it handles; when the
//! site's token differs from the one last written (a login, a refresh, a
//! load after a restart) its files are written again, atomically (a 0600
//! temporary file in the same directory, renamed over), off the runtime's
//! thread (a blocking thread does the file work, and no lock is held while
//! it does: a slow disk stalls neither the site nor `status`), one pass at
//! a time per site and in order, the latest change winning over a pass
//! not yet started; when the site has no token any more (`token logout`)
//! they are removed. A write that fails is kept as the file's
//! error (in `status` and the log) and retried; it never stops the site. A
//! site with files is refreshed ahead even when nobody asks (see
//! `TokenState::next_refresh`), so a file never holds an expired token
//! while the provider answers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use token_proto::FileStatus;
use toml::Value;
use zeroize::Zeroizing;

use crate::config::{Config, SiteConfig};
use crate::site::state::TokenState;

/// How long after a failed write it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// The access token alone, no newline.
    Raw,
    /// `Authorization: Bearer TOKEN` and a newline (`curl -H @FILE`).
    Header,
    /// `{"access_token", "token_type", "expires_at", "id_token"}`.
    Json,
    /// The site's ID token alone (an OIDC site).
    IdToken,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Header => "header",
            Format::Json => "json",
            Format::IdToken => "id_token",
        }
    }
}

/// One `[[site.NAME.file]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenFile {
    pub path: PathBuf,
    pub format: Format,
}

/// Parses the `file` key of a site: an array of tables with `path` and
/// `format`. Each file's directory must be ours and closed to writes by
/// others (it is created 0700 when missing).
pub(crate) fn parse(value: Value) -> Result<Vec<TokenFile>, String> {
    let Value::Array(items) = value else {
        return Err("write [[site.NAME.file]] tables, each with a `path`".to_owned());
    };
    let mut out: Vec<TokenFile> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let n = i + 1;
        let Value::Table(t) = item else {
            return Err(format!(
                "file #{n}: expected a table with `path` and `format`"
            ));
        };
        let mut path = None;
        let mut format = Format::Raw;
        for (k, v) in t {
            match (k.as_str(), v) {
                ("path", Value::String(s)) => path = Some(crate::config::written_path(&s).map_err(|m| format!("file #{n}: {m}"))?),
                ("format", Value::String(s)) => {
                    format = match s.as_str() {
                        "raw" => Format::Raw,
                        "header" => Format::Header,
                        "json" => Format::Json,
                        "id_token" => Format::IdToken,
                        other => {
                            return Err(format!(
                                "file #{n}: format `{other}` is not one of \"raw\", \"header\", \"json\", \"id_token\""
                            ))
                        }
                    }
                }
                (k @ ("path" | "format"), other) => {
                    return Err(format!("file #{n}: `{k}` must be a string, not a {}", other.type_str()))
                }
                (other, _) => {
                    return Err(format!(
                        "file #{n}: unknown key `{other}`; a file takes `path` and `format`"
                    ))
                }
            }
        }
        let path = path.ok_or_else(|| format!("file #{n}: `path` is missing"))?;
        check_dir(&path).map_err(|m| format!("file #{n} ({}): {m}", path.display()))?;
        if out.iter().any(|f| f.path == path) {
            return Err(format!("file #{n}: {} is listed twice", path.display()));
        }
        out.push(TokenFile { path, format });
    }
    Ok(out)
}

/// The file's directory, if it exists, is ours and others cannot write it.
#[cfg(unix)]
fn check_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot check its directory {}: {e}", dir.display())),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != me {
        return Err(format!(
            "its directory {} belongs to uid {}, not to this user: choose a directory of your own",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "its directory {} has mode {:o}: others could replace the token file there; \
             run `chmod go-w {}` or choose another directory",
            dir.display(),
            meta.mode() & 0o777,
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_dir(_path: &Path) -> Result<(), String> {
    Ok(())
}

/// What was last written for a site, and how each file fared.
#[derive(Debug, Default)]
struct SiteFiles {
    /// The token written (its expiry and when it was obtained); `None`: none.
    written: Option<Fingerprint>,
    /// Bumped at each change: an older write (or retry) that comes late is dropped.
    generation: u64,
    entries: Vec<Entry>,
    /// The next pass, not started yet: a newer change replaces it.
    next: Option<Pass>,
    /// A task is writing this site's files (it takes `next` when done).
    busy: bool,
    /// Told when `next` is set: a writer waiting to retry a failed pass
    /// takes the newer one at once.
    newer: std::sync::Arc<tokio::sync::Notify>,
}

/// One pass over a site's files: its generation, and each file's payload
/// (`None`: remove the file).
#[derive(Debug)]
struct Pass {
    generation: u64,
    work: Vec<(PathBuf, Option<Payload>)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Fingerprint {
    obtained_at: f64,
    expires_at: Option<u64>,
    id_obtained_at: Option<f64>,
}

#[derive(Debug)]
struct Entry {
    file: TokenFile,
    written_at: Option<u64>,
    error: Option<String>,
}

static FILES: Mutex<BTreeMap<String, SiteFiles>> = Mutex::new(BTreeMap::new());

fn files() -> std::sync::MutexGuard<'static, BTreeMap<String, SiteFiles>> {
    FILES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A file of the site's serves its ID token: keep that fresh too.
pub(crate) fn wants_id_token(cfg: &SiteConfig) -> bool {
    cfg.rare.files.iter().any(|f| f.format == Format::IdToken)
}

/// The hook: called by the site's actor after each thing it handles.
/// Cheap when nothing changed, nothing at all for a site without files.
pub(crate) fn sync(site: &str, cfg: &SiteConfig, st: &TokenState) {
    if cfg.rare.files.is_empty() {
        return;
    }
    let now = crate::clock::Clock::System.now();
    let fingerprint = st.access.as_ref().map(|c| Fingerprint {
        obtained_at: c.obtained_at,
        expires_at: c.expires_at,
        id_obtained_at: st.id_token.as_ref().map(|i| i.obtained_at),
    });
    let mut all = files();
    let entry = all.entry(site.to_owned()).or_default();
    let same_files = entry.entries.len() == cfg.rare.files.len()
        && entry
            .entries
            .iter()
            .zip(&cfg.rare.files)
            .all(|(e, f)| e.file == *f);
    if same_files && entry.written == fingerprint {
        return;
    }
    // Files this site no longer lists (its settings changed under it):
    // removed in the same pass.
    let dropped: Vec<PathBuf> = entry
        .entries
        .iter()
        .filter(|e| !cfg.rare.files.iter().any(|f| f.path == e.file.path))
        .map(|e| e.file.path.clone())
        .collect();
    if !same_files {
        entry.entries = cfg
            .rare
            .files
            .iter()
            .map(|f| Entry {
                file: f.clone(),
                written_at: None,
                error: None,
            })
            .collect();
    }
    entry.written = fingerprint;
    entry.generation += 1;
    let generation = entry.generation;
    let work: Vec<(PathBuf, Option<Payload>)> = cfg
        .rare
        .files
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                fingerprint.map(|_| payload(f.format, st, now)),
            )
        })
        .chain(dropped.into_iter().map(|p| (p, None)))
        .collect();
    entry.next = Some(Pass { generation, work });
    if entry.busy {
        entry.newer.notify_one();
        return;
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    entry.busy = true;
    drop(all);
    tokio::spawn(writer(site.to_owned()));
}

/// What to write, or why nothing can be.
type Payload = Result<Zeroizing<String>, String>;

fn payload(format: Format, st: &TokenState, now: f64) -> Payload {
    let Some(cur) = st.access.as_ref() else {
        return Err("no token yet".to_owned());
    };
    let token = cur.token.expose();
    let kind = if cur.token_type.eq_ignore_ascii_case("dpop") {
        "DPoP"
    } else {
        "Bearer"
    };
    let id = st
        .id_token
        .as_ref()
        .filter(|i| (i.expires_at as f64) > now)
        .map(|i| i.token.expose());
    Ok(Zeroizing::new(match format {
        Format::Raw => token.to_owned(),
        Format::Header => format!("Authorization: {kind} {token}\n"),
        Format::Json => {
            let mut v = serde_json::json!({
                "access_token": token,
                "token_type": kind,
                "expires_at": cur.expires_at,
            });
            if let Some(id) = id {
                v["id_token"] = serde_json::Value::String(id.to_owned());
            }
            let mut s = v.to_string();
            s.push('\n');
            s
        }
        Format::IdToken => match id {
            Some(id) => id.to_owned(),
            None => return Err(
                "the site holds no valid ID token: add `openid` to its scopes (an OIDC provider)"
                    .to_owned(),
            ),
        },
    }))
}

/// The site's writer: takes its passes one at a time, the file work on a
/// blocking thread; a pass that fails is tried again after
/// [`RETRY_AFTER`] unless a newer change came meanwhile.
async fn writer(site: String) {
    loop {
        let pass = {
            let mut all = files();
            let Some(state) = all.get_mut(&site) else {
                return;
            };
            match state.next.take() {
                Some(p) => p,
                None => {
                    state.busy = false;
                    return;
                }
            }
        };
        let Pass {
            generation,
            mut work,
        } = pass;
        let Some(newer) = files().get(&site).map(|s| s.newer.clone()) else {
            return;
        };
        loop {
            let s = site.clone();
            let done = tokio::task::spawn_blocking(move || {
                let results = apply(&s, &work);
                (work, results)
            })
            .await;
            let Ok((back, results)) = done else {
                // The blocking thread panicked: the pass is dropped, the
                // next change writes again.
                break;
            };
            work = back;
            if !record(&site, generation, &work, &results) {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY_AFTER) => {}
                () = newer.notified() => {}
            }
            let current = files()
                .get(&site)
                .is_some_and(|f| f.generation == generation && f.next.is_none());
            if !current {
                break;
            }
        }
    }
}

/// A file's outcome in a pass: whether it changed, or why it failed.
type Outcome = Result<bool, String>;

/// One pass's file work, no lock held.
fn apply(site: &str, work: &[(PathBuf, Option<Payload>)]) -> Vec<Outcome> {
    work.iter()
        .map(|(path, what)| {
            let result = match what {
                None => remove(path),
                Some(Ok(text)) => write_atomically(path, text.as_bytes()).map(|()| true),
                Some(Err(why)) => Err(why.clone()),
            };
            match &result {
                Ok(_) if what.is_some() => {
                    tracing::info!(site = %site, file = %path.display(), "token file written")
                }
                Ok(true) => {
                    tracing::info!(site = %site, file = %path.display(), "token file removed")
                }
                Ok(false) => {}
                Err(why) => {
                    tracing::error!(site = %site, file = %path.display(), "cannot write the token file: {why}; retrying in {}s", RETRY_AFTER.as_secs())
                }
            }
            result
        })
        .collect()
}

/// Keeps a pass's outcomes for `status` (unless a newer change has come
/// since); true when some file failed.
fn record(
    site: &str,
    generation: u64,
    work: &[(PathBuf, Option<Payload>)],
    results: &[Outcome],
) -> bool {
    let failed = results.iter().any(Result::is_err);
    let mut all = files();
    let Some(state) = all.get_mut(site).filter(|s| s.generation == generation) else {
        return failed;
    };
    let now = crate::clock::whole(crate::clock::Clock::System.now());
    for ((path, what), result) in work.iter().zip(results) {
        let Some(e) = state.entries.iter_mut().find(|e| &e.file.path == path) else {
            continue;
        };
        match result {
            Ok(_) => {
                e.written_at = what.is_some().then_some(now);
                e.error = None;
            }
            Err(why) => e.error = Some(why.clone()),
        }
    }
    failed
}

/// Removes `path`; whether it was there.
fn remove(path: &Path) -> Result<bool, String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot remove it: {e}")),
    }
}

/// A 0600 temporary file in the same directory, synced, renamed over `path`.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        crate::platform::create_private_dir(dir)
            .map_err(|e| format!("cannot create its directory: {e}"))?;
    }
    check_dir(path)?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tokend-{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| -> std::io::Result<()> {
        let mut f = crate::platform::create_private_file(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    Ok(())
}

/// The site's files in `status`: each path, its format, when it was last
/// written and its error.
pub(crate) fn status(site: &str, cfg: &SiteConfig) -> Vec<FileStatus> {
    let all = files();
    let known = all.get(site);
    cfg.rare
        .files
        .iter()
        .map(|f| {
            let e = known.and_then(|k| k.entries.iter().find(|e| e.file == *f));
            FileStatus {
                path: f.path.display().to_string(),
                format: f.format.name().to_owned(),
                written_at: e.and_then(|e| e.written_at),
                error: e.and_then(|e| e.error.clone()),
            }
        })
        .collect()
}

/// After a config change: the files no longer configured are removed (and
/// forgotten); the names of the sites with files, to start them so they
/// load their login and keep the files fresh without a caller.
pub(crate) fn reconcile(config: &Config) -> Vec<String> {
    let mut all = files();
    let mut gone = Vec::new();
    all.retain(|site, state| {
        let wanted = config
            .sites
            .get(site)
            .map(|c| c.rare.files.as_slice())
            .unwrap_or(&[]);
        for e in &state.entries {
            if !wanted.iter().any(|w| w.path == e.file.path) {
                gone.push((site.clone(), e.file.path.clone()));
            }
        }
        state
            .entries
            .retain(|e| wanted.iter().any(|w| w.path == e.file.path));
        // Rewritten at the site's next turn (new entries included).
        state.written = None;
        state.generation += 1;
        !wanted.is_empty()
    });
    drop(all);
    let removals = move || {
        for (site, path) in gone {
            match remove(&path) {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!(site = %site, file = %path.display(), "token file removed (no longer in the config)")
                }
                Err(e) => tracing::warn!(site = %site, file = %path.display(), "{e}"),
            }
        }
    };
    // Off the runtime's thread when there is one (a reload).
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(removals)),
        Err(_) => removals(),
    }
    config
        .sites
        .values()
        .filter(|c| !c.rare.files.is_empty())
        .map(|c| c.name.clone())
        .collect()
}
