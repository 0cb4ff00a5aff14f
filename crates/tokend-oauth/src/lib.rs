//! OAuth 2.0 / OpenID Connect flows and provider quirks for tokend.
//!
//! The crate is split so that every decision is a pure function: flows build
//! a [`FormRequest`], [`Http`] sends it and returns a [`RawResponse`], and
//! parsers turn that into a [`TokenResponse`] or an [`Error`]. Secrets live in
//! the newtypes of [`secret`] and never appear in `Debug`, errors or logs.

pub mod assertion;
pub mod callback;
pub mod client;
pub mod client_key;
pub mod device;
pub mod discovery;
pub mod dpop;
pub mod error;
pub mod exchange;
pub mod http;
pub mod idtoken;
pub mod invalidate;
mod jwt;
pub use jwt::{header_jwk, unverified_subject};
pub mod pkce;
pub mod provider;
mod response;
pub mod secret;
pub mod site;
pub mod token;

#[cfg(test)]
mod testserver;

pub use assertion::{AssertionFrom, AssertionSource};
pub use callback::{check_callback, parse_implicit_fragment, CallbackError};
pub use client::{Client, ClientAuth};
pub use client_key::ClientKey;
pub use device::{DeviceAuthorization, DevicePoll};
pub use discovery::discover;
pub use dpop::DpopKey;
pub use error::Error;
pub use exchange::TokenExchange;
pub use http::{FormRequest, Http, Method, RawResponse};
pub use idtoken::{IdClaims, IdTokenError, KeyCache};
pub use invalidate::invalidate;
pub use pkce::{constant_time_eq, try_random_state, Pkce};
pub use provider::Provider;
pub use secret::{
    AccessToken, Assertion, AuthCode, ClientSecret, DeviceCode, IdToken, PkceVerifier,
    RefreshToken, StoredDpopKey,
};
pub use site::Dpop;
pub use site::OAuthSite;
pub use token::{parse_token_response, Lifetime, TokenResponse, DEFAULT_LIFETIME};

/// Whether tokens, codes and secrets may be sent to `url`: `https`, or
/// plain `http` to a loopback host (a local test server, a local proxy).
pub fn tls_or_loopback(url: &url::Url) -> bool {
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        _ => false,
    }
}
