//! Story: `token logout` revokes at the provider (RFC 7009) and forgets the
//! site locally; the next get needs a new login.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokend_e2e::{exit, serve_corp_with_store};

#[test]
fn logout_revokes_and_forgets() {
    let (provider, env, _daemon) = serve_corp_with_store(3600, "file");
    let out = env.token(&["get", "corp"]);
    out.ok();
    let token = out.line().to_owned();

    env.token(&["logout", "corp"]).ok();
    let stats = provider.stats();
    assert!(
        stats.revocations >= 1,
        "logout revokes at the provider: {stats:?}"
    );
    // Revoking the refresh token revokes the grant, and with it the access token.
    let (status, _) = provider.userinfo(&token);
    assert_eq!(status, 401, "the old access token is dead after logout");

    let again = env.token(&["get", "corp", "--no-login"]);
    again.code(exit::LOGIN_REQUIRED);
}
