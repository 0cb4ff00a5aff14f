//! `lookup`: which site serves a URL (for `token credential`, git's helper,
//! `token get --url`, and the docker and cargo helpers), and how the token
//! should be sent; `urls`: every prefix served, for `docker-credential-token
//! list`. The rules that keep a token on its own URL are in
//! [`crate::config::urls`].

use std::sync::Arc;

use token_proto::{
    ErrorCode, GetRequest, LookupReply, LookupRequest, ServedUrl, UrlsReply, DEFAULT_GIT_USERNAME,
};

use crate::config::urls::{self, Miss, Target};
use crate::config::{Config, Refusal, Remote, SiteConfig};
use crate::daemon::Daemon;
use crate::error::ApiError;

/// The URL asked about: `url`, else git's `protocol` and `host` (older
/// clients), through the same matcher.
fn target(req: &LookupRequest) -> Result<Target, ApiError> {
    let refused = |message: String| ApiError::new(ErrorCode::UnknownSite, message);
    if let Some(url) = &req.url {
        return Target::parse(url).map_err(|r| refused(r.to_string()));
    }
    // The old shape keeps its old checks and words.
    Remote::new(&req.protocol, &req.host).map_err(|r| {
        refused(match r {
            Refusal::Insecure { protocol, host } => format!(
                "no token for {protocol}://{host}: tokens go only to https remotes \
                 (plain http only on a loopback host); use the https URL of the remote"
            ),
            Refusal::BadHost(host) => format!("`{host}` is not a host or host:port"),
        })
    })?;
    Target::parse(&format!("{}://{}/", req.protocol, req.host)).map_err(|r| refused(r.to_string()))
}

fn username(site: &SiteConfig) -> String {
    site.rare
        .username
        .clone()
        .unwrap_or_else(|| DEFAULT_GIT_USERNAME.to_owned())
}

pub(super) fn lookup(d: &Arc<Daemon>, req: &LookupRequest) -> Result<LookupReply, ApiError> {
    lookup_in(&d.config(), req)
}

/// The site a `get` by `url` is for, by the same URL map and with the same
/// answers as `lookup` (`unknown_site` naming the URL, `config_error` naming
/// both sites); `req.site` is set to it, `req.url` taken.
pub(super) fn site_for_get(d: &Arc<Daemon>, req: &mut GetRequest) -> Result<LookupReply, ApiError> {
    let served = lookup_in(
        &d.config(),
        &LookupRequest {
            url: req.url.take(),
            ..Default::default()
        },
    )?;
    req.site.clone_from(&served.site);
    Ok(served)
}

fn lookup_in(config: &Config, req: &LookupRequest) -> Result<LookupReply, ApiError> {
    let target = target(req)?;
    match urls::find(config.sites.values().map(|s| &**s), &target) {
        Ok(site) => Ok(LookupReply {
            site: site.name.clone(),
            git_auth: site.git_auth,
            username: username(site),
            cargo_token: site.cargo_token,
        }),
        Err(Miss::Unserved) => Err(ApiError::new(
            ErrorCode::UnknownSite,
            format!(
                "no site serves {}: add it to the `urls` (or `hosts`) of the site that serves it \
                 in {}, e.g. urls = [\"{}\"]",
                target.shown(),
                config.path.display(),
                target.as_prefix(),
            ),
        )),
        Err(Miss::Ambiguous {
            first,
            second,
            prefix,
        }) => Err(ApiError::new(
            ErrorCode::ConfigError,
            format!(
                "sites {first} and {second} both serve {} (prefix {prefix}) in {}: give one a \
                 longer `urls` prefix, or give them different `username`s and put the user \
                 name in the URL (https://USER@host/…)",
                target.shown(),
                config.path.display(),
            ),
        )),
    }
}

/// Every served `https` prefix with its site, in site order.
pub(super) fn urls(d: &Arc<Daemon>) -> UrlsReply {
    urls_in(&d.config())
}

fn urls_in(config: &Config) -> UrlsReply {
    let mut out = Vec::new();
    for site in config.sites.values() {
        let mut seen = Vec::new();
        for prefix in site.served.iter().filter(|p| p.is_https()) {
            let url = prefix.to_string();
            if !seen.contains(&url) {
                seen.push(url.clone());
                out.push(ServedUrl {
                    url,
                    site: site.name.clone(),
                    username: username(site),
                });
            }
        }
    }
    UrlsReply { urls: out }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use token_proto::{CargoToken, GitAuth};

    fn config() -> Config {
        let site = |name: &str, keys: &str| {
            format!("[site.{name}]\nissuer = \"https://auth.example\"\nclient_id = \"c\"\n{keys}\n")
        };
        let text = format!(
            "{}{}{}",
            site("forge", "hosts = [\"git.example.com\", \"127.0.0.1:8080\"]\ngit_auth = \"bearer\""),
            site(
                "team-a",
                "urls = [\"https://git.example.com/team-a/\"]\nusername = \"alice\"\ncargo_token = \"raw\""
            ),
            site("reg", "urls = [\"https://registry.example.com/v2\"]"),
        );
        let c = Config::parse(std::path::Path::new("/c.toml"), &text);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        c
    }

    fn by_url(url: &str) -> Result<LookupReply, ApiError> {
        lookup_in(
            &config(),
            &LookupRequest {
                url: Some(url.to_owned()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn lookup_by_url_and_by_gits_protocol_and_host() {
        let a = by_url("https://git.example.com/team-a/x.git").unwrap();
        assert_eq!(
            a,
            LookupReply {
                site: "team-a".into(),
                git_auth: GitAuth::Basic,
                username: "alice".into(),
                cargo_token: CargoToken::Raw,
            }
        );
        let forge = by_url("https://git.example.com/other/x.git").unwrap();
        assert_eq!(
            (forge.site.as_str(), forge.git_auth),
            ("forge", GitAuth::Bearer)
        );
        assert_eq!(forge.username, "oauth2");
        assert_eq!(by_url("registry.example.com/v2/").unwrap().site, "reg");
        assert_eq!(by_url("127.0.0.1:8080").unwrap().site, "forge");
        // An older client: protocol and host, no path.
        let old = |protocol: &str, host: &str| {
            lookup_in(
                &config(),
                &LookupRequest {
                    protocol: protocol.into(),
                    host: host.into(),
                    url: None,
                },
            )
        };
        assert_eq!(old("https", "git.example.com").unwrap().site, "forge");
        assert_eq!(old("http", "127.0.0.1:8080").unwrap().site, "forge");
        let e = old("http", "git.example.com").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownSite);
        assert!(e.message.contains("only to https"), "{}", e.message);
        let e = old("https", "elsewhere.example").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownSite);
        assert!(
            e.message
                .contains("no site serves https://elsewhere.example/"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_urls_op_lists_https_prefixes_with_their_sites() {
        let listed: Vec<(String, String)> = urls_in(&config())
            .urls
            .into_iter()
            .map(|u| (u.url, u.site))
            .collect();
        let want = [
            ("https://git.example.com/", "forge"),
            ("https://127.0.0.1:8080/", "forge"),
            ("https://registry.example.com/v2/", "reg"),
            ("https://git.example.com/team-a/", "team-a"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(u, s)| ((*u).to_owned(), (*s).to_owned()))
            .collect();
        assert_eq!(listed, want);
    }
}
