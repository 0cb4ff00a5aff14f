//! Story: shell users get completion for commands, options and their own
//! site names, from `token completions bash|zsh|fish`, without a daemon.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokend_e2e::{bin, exit, require, Env};

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

/// `token --help`'s USAGE lines, continuations joined: each command with the
/// `--options` it lists.
fn help_usage(env: &Env) -> Vec<(String, Vec<String>)> {
    let help = env.token(&["--help"]);
    help.ok();
    let usage = help
        .stdout
        .split("USAGE:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_default()
        .to_owned();
    let mut lines: Vec<String> = Vec::new();
    for line in usage.lines() {
        match (line.trim_start().strip_prefix("token "), lines.last_mut()) {
            (Some(cmd), _) => lines.push(cmd.to_owned()),
            (None, Some(last)) => last.push_str(line),
            (None, None) => {}
        }
    }
    lines
        .iter()
        .map(|l| {
            let mut words = l.split_whitespace();
            let cmd = words.next().unwrap_or_default().to_owned();
            let opts = words
                .map(|w| {
                    w.trim_start_matches('[')
                        .trim_end_matches("...")
                        .trim_end_matches(']')
                })
                .filter(|w| w.starts_with("--") && *w != "--")
                .map(str::to_owned)
                .collect();
            (cmd, opts)
        })
        .collect()
}

/// Whether `shell` runs here.
fn have(shell: &str) -> bool {
    std::process::Command::new(shell)
        .args(["-c", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What zsh completes for `token CMD --`, with compadd and compdef stood in
/// for (no completion system needed): the words `_token` offers.
fn zsh_completes(env: &Env, cmd: &str) -> Vec<String> {
    let script = format!(
        r#"compadd() {{ local seen=0 a; for a in "$@"; do if (( seen )); then print -r -- "$a"; elif [[ $a == -- ]]; then seen=1; fi; done }}
compdef() {{ : }}
source <(token completions zsh)
words=(token {cmd} --); CURRENT=3; _token"#
    );
    let out = env
        .cmd(&["-f", "-c", &script])
        .program("zsh")
        .env("PATH", &path_with_token())
        .run();
    out.ok();
    out.stdout.lines().map(str::to_owned).collect()
}

/// What fish completes for `token CMD --` (`complete -C`).
fn fish_completes(env: &Env, cmd: &str) -> Vec<String> {
    let script = format!("token completions fish | source; complete -C 'token {cmd} --'");
    let out = env
        .cmd(&["--no-config", "-c", &script])
        .program("fish")
        .env("PATH", &path_with_token())
        .run();
    out.ok();
    out.stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
        .collect()
}

/// What a shell completes for `token CMD --`.
type Completer<'a> = &'a dyn Fn(&str) -> Vec<String>;

#[test]
fn every_option_help_lists_completes_in_bash_zsh_and_fish() {
    let test = "every_option_help_lists_completes_in_bash_zsh_and_fish";
    let env = Env::new();
    env.write_config("[site.corp]\nissuer = \"https://a.example\"\nclient_id = \"x\"\n");
    let usage = help_usage(&env);
    let get = usage.iter().find(|(c, _)| c == "get");
    assert!(
        get.is_some_and(|(_, o)| o.contains(&"--dpop".to_owned())),
        "{usage:?}"
    );
    let shells: [(&str, Completer); 3] = [
        ("bash", &|cmd| bash_completes(&env, &[cmd, "--"])),
        ("zsh", &|cmd| zsh_completes(&env, cmd)),
        ("fish", &|cmd| fish_completes(&env, cmd)),
    ];
    for (shell, completes) in shells {
        if !require(
            have(shell),
            test,
            &format!("{shell} is not installed"),
            &format!("apt-get install {shell}"),
        ) {
            continue;
        }
        for (cmd, opts) in usage.iter().filter(|(_, o)| !o.is_empty()) {
            let offered = completes(cmd);
            for opt in opts {
                assert!(
                    offered.contains(opt),
                    "{shell}: `token {cmd} --<TAB>` does not offer {opt}: {offered:?}"
                );
            }
        }
    }
}
