//! Story: shell users get completion for commands, options and their own
//! site names, from `token completions bash|zsh|fish`, without a daemon.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokend_e2e::{bin, exit, Env};

/// PATH with the built `token` first.
fn path_with_token() -> String {
    let dir = bin("token");
    format!(
        "{}:{}",
        dir.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// What bash completes for `token WORDS…` (the last word being completed).
fn bash_completes(env: &Env, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source <(token completions bash) && COMP_WORDS=(token {}) && COMP_CWORD={} && _token && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        quoted.join(" "),
        words.len()
    );
    let out = env
        .cmd(&["-c", &script])
        .program("bash")
        .env("PATH", &path_with_token())
        .run();
    out.ok();
    out.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn bash_completes_commands_options_and_site_names() {
    let env = Env::new();
    env.write_config(
        "[site.corp]\nissuer = \"https://a.example\"\nclient_id = \"x\"\n\n[site.github]\npreset = \"github\"\nclient_id = \"y\"\n",
    );
    // No daemon runs, and none is started: the names come from the file.
    assert_eq!(bash_completes(&env, &["get", ""]), ["corp", "github"]);
    assert_eq!(bash_completes(&env, &["login", "g"]), ["github"]);
    assert!(bash_completes(&env, &["st"]).contains(&"status".to_owned()));
    assert_eq!(
        bash_completes(&env, &["get", "corp", "--format", ""]),
        ["raw", "header", "json"]
    );
    assert!(bash_completes(&env, &["login", "corp", "--"]).contains(&"--device".to_owned()));
    env.token(&["status"]).code(exit::UNREACHABLE);
}

#[test]
fn zsh_and_fish_scripts_and_a_helpful_error() {
    let env = Env::new();
    for shell in ["zsh", "fish"] {
        let out = env.token(&["completions", shell]);
        out.ok();
        assert!(out.stdout.contains("token sites"), "{shell}: {out}");
    }
    let out = env.token(&["completions", "tcsh"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("bash, zsh or fish"), "{out}");
}
