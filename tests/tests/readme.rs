//! Story: a user copies an example from the README and it does what the
//! README says, with the real `token` (and jq, bash) on real output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use tokend_e2e::{require, serve_corp, workspace_root, Env};

fn readme() -> String {
    fs::read_to_string(workspace_root().join("README.md")).expect("README.md")
}

/// The one README line that contains `needle`.
fn readme_line(needle: &str) -> String {
    let text = readme();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "one README line with {needle:?}: {lines:?}");
    lines[0].trim().to_owned()
}

/// Stack Exchange tokens end in `))`; the README's `eval … jq` must keep
/// them whole, whatever the token and key hold.
#[test]
fn the_stack_exchange_jq_example_survives_tokens_ending_in_parentheses() {
    let jq = std::path::Path::new("/usr/bin/jq").is_file();
    if !require(
        jq,
        "the_stack_exchange_jq_example_survives_tokens_ending_in_parentheses",
        "no jq",
        "apt-get install jq",
    ) {
        return;
    }
    let example = readme_line("eval \"$(token get stackoverflow --format json");
    // `token` as the README's caller sees it: the JSON a Stack Exchange
    // site's `token get --format json` prints.
    let env = Env::new();
    let dir = env.root().join("fake-bin");
    fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("token");
    let token = "Ab1(c2)'d\"3$e))";
    let key = "k3y((";
    let json = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_at": null,
        "scopes": ["no_expiry"],
        "api_key": key,
    });
    fs::write(&fake, format!("#!/bin/sh\ncat <<'EOF'\n{json}\nEOF\n")).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!("set -e\n{example}\nprintf '%s\\n' \"$t\" \"$k\"\n");
    let out = env
        .cmd(&["-c", &script])
        .program("bash")
        .env(
            "PATH",
            &format!(
                "{}:{}",
                dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .run();
    assert_eq!(out.code, 0, "{example}\n{out}");
    assert_eq!(out.stdout, format!("{token}\n{key}\n"), "{example}\n{out}");
}

/// The README and `token --help` name the fields `--format json` prints.
#[test]
fn the_json_fields_the_readme_names_are_the_ones_printed() {
    let (_provider, env, _daemon) = serve_corp(3600);
    let out = env.token(&["get", "corp", "--format", "json"]);
    out.ok();
    let v = out.json();
    let printed: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let row = readme_line("`  --format raw\\|header\\|json`");
    let help = env.token(&["--help"]);
    let help_line = help
        .stdout
        .lines()
        .find(|l| l.contains("json ("))
        .unwrap_or_default()
        .to_owned();
    for field in &printed {
        assert!(row.contains(field), "README names `{field}`: {row}");
        assert!(
            help_line.contains(field),
            "--help names `{field}`: {help_line}"
        );
    }
    for word in ["token,", "type,"] {
        assert!(!row.contains(&format!(" {word}")), "no such field: {row}");
    }
}
