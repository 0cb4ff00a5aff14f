//! What a grant is: every decision that depends on a site's `grant`, each
//! one exhaustive `match` over [`Grant`] (no `==`, no `_` arm), so a new
//! grant fails to compile here, in each decision it must make, and the
//! code elsewhere asks these questions instead of naming grants.

use std::iter;

/// The OAuth grant a site gets its tokens with (`grant = "…"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// RFC 6749 §4.1 with PKCE: the user consents in a browser.
    AuthorizationCode,
    /// RFC 6749 §4.4: the client alone, with its secret.
    ClientCredentials,
    /// RFC 8628: the user consents on any device with a code.
    DeviceCode,
    /// RFC 6749 §4.2 (legacy): the token comes back in the browser's URL.
    Implicit,
    /// RFC 7523 §2.1: a signed assertion someone else issued is the grant.
    JwtBearer,
    /// RFC 8693: another token (another site's, a file's) is exchanged.
    TokenExchange,
}

/// How a site's login is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoginBy {
    /// Nobody to ask: a "login" is a fresh token from the token endpoint.
    TokenCall,
    /// The user, in a browser whose redirect brings a code: tokend's
    /// loopback listener, else paste-back; without a browser, the device
    /// flow where the provider offers one.
    Code,
    /// The user, on any device: the device flow (a code pasted back when
    /// asked for with `--paste`).
    Device,
    /// The user, in a browser whose redirect brings the token itself in
    /// its fragment, which no listener sees: paste-back only.
    Fragment,
}

/// The token call that renews a site's token without the user: a grant
/// that needs no user names its own call here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// The client-credentials grant, asked again: nothing kept between
    /// calls.
    ClientCredentials,
    /// The jwt-bearer grant with a fresh assertion.
    JwtBearer,
    /// A token exchange with a fresh subject token.
    TokenExchange,
    /// The refresh token the last login brought, if it brought one.
    RefreshToken,
}

impl Grant {
    /// Without a `grant` key.
    pub(crate) const DEFAULT: Grant = Grant::AuthorizationCode;

    /// Its name in the config.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Grant::AuthorizationCode => "authorization_code",
            Grant::ClientCredentials => "client_credentials",
            Grant::DeviceCode => "device_code",
            Grant::Implicit => "implicit",
            Grant::JwtBearer => "jwt_bearer",
            Grant::TokenExchange => "token_exchange",
        }
    }

    /// Every grant, in the order the config's errors list them. Written as
    /// a chain of exhaustive matches so a new grant cannot be left out.
    pub(crate) fn all() -> impl Iterator<Item = Grant> + Clone {
        iter::successors(Some(Grant::AuthorizationCode), |g| match g {
            Grant::AuthorizationCode => Some(Grant::ClientCredentials),
            Grant::ClientCredentials => Some(Grant::DeviceCode),
            Grant::DeviceCode => Some(Grant::Implicit),
            Grant::Implicit => Some(Grant::JwtBearer),
            Grant::JwtBearer => Some(Grant::TokenExchange),
            Grant::TokenExchange => None,
        })
    }

    /// How a login is done.
    pub(crate) fn login(self) -> LoginBy {
        match self {
            Grant::AuthorizationCode => LoginBy::Code,
            Grant::ClientCredentials | Grant::JwtBearer | Grant::TokenExchange => {
                LoginBy::TokenCall
            }
            Grant::DeviceCode => LoginBy::Device,
            Grant::Implicit => LoginBy::Fragment,
        }
    }

    /// What token call renews the site's token without the user.
    pub(crate) fn renewal(self) -> Renewal {
        match self {
            Grant::ClientCredentials => Renewal::ClientCredentials,
            Grant::JwtBearer => Renewal::JwtBearer,
            Grant::TokenExchange => Renewal::TokenExchange,
            // The implicit grant never brings a refresh token (RFC 6749
            // §4.2.2); a provider's stray one is used all the same.
            Grant::AuthorizationCode | Grant::DeviceCode | Grant::Implicit => Renewal::RefreshToken,
        }
    }

    /// Whether a new access token can be had without the user: client
    /// credentials always, the other grants only with a refresh token.
    pub(crate) fn renews_alone(self, has_refresh_token: bool) -> bool {
        match self.renewal() {
            Renewal::ClientCredentials | Renewal::JwtBearer | Renewal::TokenExchange => true,
            Renewal::RefreshToken => has_refresh_token,
        }
    }

    /// Whether a token nobody used since it was fetched is left to lapse
    /// instead of being renewed ahead (the next `get` fetches one). A
    /// refresh token is kept alive (and rotated) by using it; a grant
    /// asked again loses nothing by waiting.
    /// An exchanged or jwt-bearer token is renewed ahead like a refreshed
    /// one: its consumer (a sidecar's, a CI job's) should never wait.
    pub(crate) fn lapses_unused(self) -> bool {
        match self {
            Grant::ClientCredentials => true,
            Grant::AuthorizationCode
            | Grant::DeviceCode
            | Grant::Implicit
            | Grant::JwtBearer
            | Grant::TokenExchange => false,
        }
    }

    /// Whether the site must have a client secret: the client alone is
    /// who the token is for.
    /// (A jwt-bearer or exchange grant carries its own proof.)
    pub(crate) fn needs_secret(self) -> bool {
        match self {
            Grant::ClientCredentials => true,
            Grant::AuthorizationCode
            | Grant::DeviceCode
            | Grant::Implicit
            | Grant::JwtBearer
            | Grant::TokenExchange => false,
        }
    }

    /// Whether the token comes from the browser rather than the token
    /// endpoint: the implicit grant's, which is unbound (no DPoP) and has
    /// authorization endpoints and redirect pages of its own at some
    /// providers.
    pub(crate) fn token_from_browser(self) -> bool {
        match self {
            Grant::Implicit => true,
            Grant::AuthorizationCode
            | Grant::ClientCredentials
            | Grant::DeviceCode
            | Grant::JwtBearer
            | Grant::TokenExchange => false,
        }
    }

    /// Whether a token response should bring a refresh token, given
    /// whether the site asks for `offline_access`: only for a grant with a
    /// user, and then when asked for by name (OpenID Connect).
    pub(crate) fn expects_refresh_token(self, offline_access: bool) -> bool {
        match self {
            Grant::AuthorizationCode | Grant::DeviceCode => offline_access,
            // RFC 6749 §4.4.3 (should not) and §4.2.2 (must not).
            // RFC 7523 §2.1 and RFC 8693 §2.2.1: renewed by the grant.
            Grant::ClientCredentials
            | Grant::Implicit
            | Grant::JwtBearer
            | Grant::TokenExchange => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grant_is_listed_once_by_its_config_name() {
        let names: Vec<&str> = Grant::all().map(Grant::name).collect();
        assert_eq!(
            names,
            [
                "authorization_code",
                "client_credentials",
                "device_code",
                "implicit",
                "jwt_bearer",
                "token_exchange"
            ]
        );
        assert_eq!(Grant::DEFAULT.name(), "authorization_code");
    }

    #[test]
    fn how_each_grant_logs_in() {
        let by: Vec<LoginBy> = Grant::all().map(Grant::login).collect();
        assert_eq!(
            by,
            [
                LoginBy::Code,
                LoginBy::TokenCall,
                LoginBy::Device,
                LoginBy::Fragment,
                LoginBy::TokenCall,
                LoginBy::TokenCall
            ]
        );
    }

    #[test]
    fn only_the_grants_without_a_user_renew_without_a_refresh_token() {
        for g in Grant::all() {
            assert!(g.renews_alone(true), "{g:?} with a refresh token");
            let machine = matches!(
                g,
                Grant::ClientCredentials | Grant::JwtBearer | Grant::TokenExchange
            );
            assert_eq!(g.renews_alone(false), machine, "{g:?}");
            assert_eq!(
                g.renewal(),
                match g {
                    Grant::ClientCredentials => Renewal::ClientCredentials,
                    Grant::JwtBearer => Renewal::JwtBearer,
                    Grant::TokenExchange => Renewal::TokenExchange,
                    _ => Renewal::RefreshToken,
                }
            );
        }
    }

    #[test]
    fn a_client_credentials_token_lapses_unused_and_needs_a_secret() {
        for g in Grant::all() {
            let cc = matches!(g, Grant::ClientCredentials);
            assert_eq!(g.lapses_unused(), cc, "{g:?}");
            assert_eq!(g.needs_secret(), cc, "{g:?}");
        }
    }

    #[test]
    fn only_the_implicit_token_comes_from_the_browser() {
        for g in Grant::all() {
            assert_eq!(
                g.token_from_browser(),
                matches!(g, Grant::Implicit),
                "{g:?}"
            );
        }
    }

    #[test]
    fn a_refresh_token_is_expected_for_offline_access_with_a_user() {
        for g in Grant::all() {
            assert!(!g.expects_refresh_token(false), "{g:?}");
        }
        assert!(Grant::AuthorizationCode.expects_refresh_token(true));
        assert!(Grant::DeviceCode.expects_refresh_token(true));
        assert!(!Grant::ClientCredentials.expects_refresh_token(true));
        assert!(!Grant::Implicit.expects_refresh_token(true));
    }
}
