//! What a client authentication is to the config (`client_auth = "…"`):
//! each decision one exhaustive `match` over [`ClientAuth`], so a new one
//! fails to compile here, in each decision it must make. The config holds
//! `tokend_oauth::ClientAuth` itself: nothing converts it.

use std::iter;

pub(crate) use tokend_oauth::ClientAuth;

/// Its name in the config.
pub(crate) fn name(auth: ClientAuth) -> &'static str {
    match auth {
        ClientAuth::None => "none",
        ClientAuth::Basic => "basic",
        ClientAuth::Post => "post",
        ClientAuth::PrivateKeyJwt => "private_key_jwt",
        ClientAuth::Assertion => "client_assertion",
    }
}

/// Every client authentication, in the order the config's errors list
/// them. A chain of exhaustive matches: a new one cannot be left out.
pub(crate) fn all() -> impl Iterator<Item = ClientAuth> + Clone {
    iter::successors(Some(ClientAuth::None), |a| match a {
        ClientAuth::None => Some(ClientAuth::Basic),
        ClientAuth::Basic => Some(ClientAuth::Post),
        ClientAuth::Post => Some(ClientAuth::PrivateKeyJwt),
        ClientAuth::PrivateKeyJwt => Some(ClientAuth::Assertion),
        ClientAuth::Assertion => None,
    })
}

/// Whether it sends a client secret (which the site must then have).
pub(crate) fn needs_secret(auth: ClientAuth) -> bool {
    match auth {
        ClientAuth::None | ClientAuth::PrivateKeyJwt | ClientAuth::Assertion => false,
        ClientAuth::Basic | ClientAuth::Post => true,
    }
}

/// Without a `client_auth` key (nor a preset's): Basic with a client
/// secret (RFC 6749 §2.3.1: servers must support it), else none.
pub(crate) fn default(has_secret: bool) -> ClientAuth {
    if has_secret {
        ClientAuth::Basic
    } else {
        ClientAuth::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_auth_is_listed_once_by_its_config_name() {
        let names: Vec<&str> = all().map(name).collect();
        assert_eq!(
            names,
            [
                "none",
                "basic",
                "post",
                "private_key_jwt",
                "client_assertion"
            ]
        );
        let secret: Vec<bool> = all().map(needs_secret).collect();
        assert_eq!(secret, [false, true, true, false, false]);
        assert_eq!(default(true), ClientAuth::Basic);
        assert_eq!(default(false), ClientAuth::None);
    }
}
