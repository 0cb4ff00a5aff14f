//! Whether the config file may be believed. It says where refresh tokens
//! and client secrets go and which commands run, so a file that another
//! user could change is refused as a whole, as ssh treats its config: the
//! file as opened (fstat on the descriptor that is read, so a swap between
//! check and read changes nothing) and every directory above it up to
//! `$HOME` (or `/` outside it), both above the path as given (where a
//! symlinked dotfile lives, which others must not replace) and above the
//! file it resolves to.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Why the file was not read.
#[derive(Debug)]
pub(super) enum Refusal {
    Io(std::io::Error),
    /// Another user could change it: why, with what to run.
    Untrusted(String),
}

/// The text of the config file at `path`, if no one else could have
/// written it.
pub(super) fn read_trusted(path: &Path) -> Result<String, Refusal> {
    let mut file = std::fs::File::open(path).map_err(Refusal::Io)?;
    if let Some(why) = crate::platform::opened_writable_by_others(&file, path) {
        return Err(Refusal::Untrusted(why));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .and_then(|h| std::fs::canonicalize(h).ok());
    let given_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let chains = [
        std::fs::canonicalize(&given_dir).ok(),
        std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned)),
    ];
    for dir in chains.iter().flatten() {
        if let Some(why) = first_unsafe_ancestor(dir, home.as_deref()) {
            return Err(Refusal::Untrusted(why));
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(Refusal::Io)?;
    Ok(text)
}

/// The first of `dir` and its ancestors, up to and including `home` when
/// `dir` is inside it, that another user could change.
fn first_unsafe_ancestor(dir: &Path, home: Option<&Path>) -> Option<String> {
    for d in dir.ancestors() {
        if let Some(why) = crate::platform::writable_by_others(d) {
            return Some(why);
        }
        if home.is_some_and(|h| d == h) {
            break;
        }
    }
    None
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_file_or_any_directory_above_it_that_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.toml");
        std::fs::write(&file, "[site.x]\n").unwrap();
        chmod(&file, 0o600);
        for d in [tmp.path().to_owned(), tmp.path().join("a"), dir.clone()] {
            chmod(&d, 0o700);
        }
        assert_eq!(read_trusted(&file).unwrap(), "[site.x]\n");

        chmod(&file, 0o620);
        assert!(
            matches!(read_trusted(&file), Err(Refusal::Untrusted(ref m)) if m.contains("chmod go-w")),
            "the file"
        );
        chmod(&file, 0o600);
        chmod(&tmp.path().join("a"), 0o777);
        match read_trusted(&file) {
            Err(Refusal::Untrusted(m)) => assert!(m.contains("/a is writable"), "{m}"),
            other => panic!("an ancestor: {other:?}"),
        }
        // Sticky, like /tmp: others cannot replace what is ours in it.
        chmod(&tmp.path().join("a"), 0o1777);
        assert!(read_trusted(&file).is_ok());
    }

    #[test]
    fn a_symlinked_config_is_judged_where_the_link_is_and_where_it_points() {
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o700);
        let dots = tmp.path().join("dotfiles");
        let conf = tmp.path().join("conf");
        for d in [&dots, &conf] {
            std::fs::create_dir(d).unwrap();
            chmod(d, 0o700);
        }
        let target = dots.join("tokend.toml");
        std::fs::write(&target, "").unwrap();
        chmod(&target, 0o600);
        let link = conf.join("config.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_trusted(&link).is_ok());
        chmod(&dots, 0o777);
        assert!(
            matches!(read_trusted(&link), Err(Refusal::Untrusted(ref m)) if m.contains("dotfiles")),
            "the target's directory"
        );
        chmod(&dots, 0o700);
        chmod(&conf, 0o777);
        assert!(
            matches!(read_trusted(&link), Err(Refusal::Untrusted(ref m)) if m.contains("conf")),
            "the link's directory"
        );
    }
}
