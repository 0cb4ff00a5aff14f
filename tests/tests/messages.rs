//! Story: what `token` says is true and says what to do: a scope the
//! provider left out is its doing, not the config's; warnings come one to a
//! line; notes are not errors; a mistyped command or name gets the right
//! spelling, a name the config would refuse is not suggested.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokend_e2e::{exit, Env, Provider};

/// `[site.corp]` for the public client with `scopes`, of which the test
/// provider grants only the ones it knows (openid, read).
fn corp_with_scopes(provider: &Provider, scopes: &str) -> String {
    format!(
        "[site.corp]\nissuer = \"{}\"\nclient_id = \"public-pkce\"\nscopes = {scopes}\n",
        provider.issuer()
    )
}

#[test]
fn a_configured_scope_the_provider_did_not_grant_is_said_to_be_the_providers() {
    let provider = Provider::start(3600);
    let mut env = Env::new();
    env.write_config(&corp_with_scopes(
        &provider,
        r#"["openid", "read", "admin"]"#,
    ));
    let _daemon = env.daemon();
    env.token(&["get", "corp"]).ok();

    let out = env.token(&["get", "corp", "--scope", "admin"]);
    out.code(exit::USAGE);
    assert!(
        out.stderr
            .contains("the provider did not grant scope `admin` at the login (it granted"),
        "{out}"
    );
    assert!(
        !out.stderr.contains("add it to `scopes`"),
        "it is there: {out}"
    );

    // A scope that is not configured at all still points to the config.
    let out = env.token(&["get", "corp", "--scope", "write"]);
    out.code(exit::USAGE);
    assert!(out.stderr.contains("add it to `scopes`"), "{out}");
}
