//! Presets: `preset = "NAME"` in a site table fills in a provider's endpoints
//! and quirks. Each preset is a row of data in [`PRESETS`]; applying one only
//! fills what the user left unset, so any field of a preset can be
//! overridden in the config.

use super::client_auth::ClientAuth;
use super::site::{SiteConfig, WrittenUrl};

/// The key that parameterizes a preset's URLs (`subdomain = "acme"`).
struct Param {
    key: &'static str,
    /// `None`: the key is required.
    default: Option<&'static str>,
    /// What a valid value looks like, for the error message.
    shape: &'static str,
    valid: fn(&str) -> bool,
    /// Whether OIDC discovery works for this value; when it does not, the
    /// preset's explicit endpoints are used instead of its issuer.
    discoverable: fn(&str) -> bool,
}

/// One provider. Templates may hold `{KEY}` for the value of [`Param::key`].
struct Preset {
    name: &'static str,
    param: Option<Param>,
    /// Discovery; when set (and discoverable) the endpoints below are not used.
    issuer: Option<&'static str>,
    authorize_url: Option<&'static str>,
    /// The authorization endpoint of `grant = "implicit"`, where it differs.
    implicit_authorize_url: Option<&'static str>,
    token_url: Option<&'static str>,
    device_url: Option<&'static str>,
    /// `None`: the loopback default.
    redirect_uri: Option<&'static str>,
    /// The redirect of `grant = "implicit"` (a paste-mode page), if any.
    implicit_redirect_uri: Option<&'static str>,
    scope_separator: Option<&'static str>,
    /// Base of the Stack Exchange API, whose `/access-tokens/…/invalidate`
    /// takes the place of RFC 7009 revocation at logout.
    api_base: Option<&'static str>,
    /// How a site with a client secret authenticates unless `client_auth`
    /// says otherwise (`None`: the usual default, basic).
    secret_auth: Option<ClientAuth>,
    /// The authorization request's `prompt` unless the site sets one
    /// (`Some("")`: none, where `consent` would be the default).
    prompt: Option<&'static str>,
}

const NONE: Preset = Preset {
    name: "",
    param: None,
    issuer: None,
    authorize_url: None,
    implicit_authorize_url: None,
    token_url: None,
    device_url: None,
    redirect_uri: None,
    implicit_redirect_uri: None,
    scope_separator: None,
    api_base: None,
    secret_auth: None,
    prompt: None,
};

fn always(_: &str) -> bool {
    true
}

/// A DNS label: what `https://LABEL.stackenterprise.co` allows.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A tenant id (a GUID) or a domain name, never a path or query.
fn tenant_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
}

/// Microsoft's discovery document names the tenant's GUID as issuer; for
/// `common`, `organizations`, `consumers` it is a `{tenantid}` template and
/// for a domain name the GUID, neither equal to the configured issuer, which
/// tokend requires. So only a GUID tenant is discovered.
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

const STACK_EXCHANGE: &str = "stackexchange";
const TEAMS: &str = "stackoverflow-teams";

static PRESETS: &[Preset] = &[
    Preset {
        name: STACK_EXCHANGE,
        authorize_url: Some("https://stackoverflow.com/oauth"),
        implicit_authorize_url: Some("https://stackoverflow.com/oauth/dialog"),
        token_url: Some("https://stackoverflow.com/oauth/access_token/json"),
        // Loopback by default: the app's OAuth domain must then be
        // 127.0.0.1 (or localhost); the implicit flow cannot use loopback.
        implicit_redirect_uri: Some("https://stackexchange.com/oauth/login_success"),
        scope_separator: Some(","),
        api_base: Some("https://api.stackexchange.com/2.3"),
        // client_id and client_secret are form parameters in SE's docs.
        secret_auth: Some(ClientAuth::Post),
        ..NONE
    },
    Preset {
        name: TEAMS,
        param: Some(Param {
            key: "subdomain",
            default: None,
            shape: "the name in https://NAME.stackenterprise.co, e.g. subdomain = \"acme\"",
            valid: dns_label,
            discoverable: always,
        }),
        authorize_url: Some("https://{subdomain}.stackenterprise.co/oauth"),
        implicit_authorize_url: Some("https://{subdomain}.stackenterprise.co/oauth/dialog"),
        token_url: Some("https://{subdomain}.stackenterprise.co/oauth/access_token/json"),
        // The only redirect Teams allows: paste mode.
        redirect_uri: Some("https://{subdomain}.stackenterprise.co/oauth/login_success"),
        scope_separator: Some(","),
        api_base: Some("https://{subdomain}.stackenterprise.co/api/2.3"),
        secret_auth: Some(ClientAuth::Post),
        ..NONE
    },
    Preset {
        name: "github",
        authorize_url: Some("https://github.com/login/oauth/authorize"),
        token_url: Some("https://github.com/login/oauth/access_token"),
        device_url: Some("https://github.com/login/device/code"),
        secret_auth: Some(ClientAuth::Post),
        ..NONE
    },
    Preset {
        name: "gitlab",
        param: Some(Param {
            key: "base_url",
            default: Some("https://gitlab.com"),
            shape: "the URL of the GitLab instance, e.g. base_url = \"https://gitlab.example.com\"",
            valid: always,
            discoverable: always,
        }),
        issuer: Some("{base_url}"),
        ..NONE
    },
    Preset {
        name: "google",
        issuer: Some("https://accounts.google.com"),
        ..NONE
    },
    Preset {
        name: "microsoft",
        param: Some(Param {
            key: "tenant",
            default: Some("common"),
            shape: "a tenant id, a domain, or common, organizations or consumers",
            valid: tenant_name,
            discoverable: is_guid,
        }),
        issuer: Some("https://login.microsoftonline.com/{tenant}/v2.0"),
        authorize_url: Some("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"),
        token_url: Some("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
        device_url: Some("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode"),
        // Entra ID issues refresh tokens for offline_access without a
        // consent prompt, and a tenant that restricts user consent would
        // turn prompt=consent into "needs admin approval".
        prompt: Some(""),
        ..NONE
    },
];

/// The names of the presets, for error messages.
pub(super) fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// A preset problem, for the key at fault.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PresetError {
    pub key: &'static str,
    pub message: String,
}

/// The keys only some preset reads, with the field that holds them.
fn param_value<'a>(site: &'a SiteConfig, key: &str) -> Option<&'a str> {
    match key {
        "subdomain" => site.rare.subdomain.as_deref(),
        "base_url" => site.rare.base_url.as_deref(),
        "tenant" => site.rare.tenant.as_deref(),
        _ => None,
    }
}

const PARAM_KEYS: &[&str] = &["subdomain", "base_url", "tenant"];

/// Fills what the site's preset provides and the user left unset.
/// `separator_given`: the user set `scope_separator` (the field itself
/// always holds a value, `" "` by default).
pub(super) fn apply(site: &mut SiteConfig, separator_given: bool) -> Result<(), PresetError> {
    let preset = match site.rare.preset.as_deref() {
        None => None,
        Some(name) => Some(PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
            let known: Vec<String> = names().iter().map(|n| format!("\"{n}\"")).collect();
            PresetError {
                key: "preset",
                message: format!(
                    "`{name}` is not a known preset; use one of {}",
                    known.join(", ")
                ),
            }
        })?),
    };
    // A parameter of another preset (or of none) would be silently ignored.
    for key in PARAM_KEYS {
        let used = preset
            .and_then(|p| p.param.as_ref())
            .is_some_and(|p| p.key == *key);
        if !used && param_value(site, key).is_some() {
            let owner = PRESETS
                .iter()
                .find(|p| p.param.as_ref().is_some_and(|p| p.key == *key))
                .map_or("", |p| p.name);
            return Err(PresetError {
                key,
                message: format!(
                    "only used with preset = \"{owner}\"; remove it or set that preset"
                ),
            });
        }
    }
    let Some(preset) = preset else {
        return Ok(());
    };

    let (value, discoverable) = match &preset.param {
        None => (String::new(), true),
        Some(param) => {
            let value = match (param_value(site, param.key), param.default) {
                (Some(v), _) => v.trim_end_matches('/').to_owned(),
                (None, Some(d)) => d.to_owned(),
                (None, None) => {
                    return Err(PresetError {
                        key: param.key,
                        message: format!(
                            "missing: preset \"{}\" needs {}",
                            preset.name, param.shape
                        ),
                    })
                }
            };
            if !(param.valid)(&value) {
                return Err(PresetError {
                    key: param.key,
                    message: format!("`{value}` is not valid here: give {}", param.shape),
                });
            }
            let discoverable = (param.discoverable)(&value);
            (value, discoverable)
        }
    };
    let fill = |template: Option<&str>| -> Option<String> {
        let template = template?;
        Some(match &preset.param {
            Some(p) => template.replace(&format!("{{{}}}", p.key), &value),
            None => template.to_owned(),
        })
    };
    // A URL made from the parameter is checked as the config's own are,
    // and blamed on the parameter.
    let key = preset.param.as_ref().map_or("preset", |p| p.key);

    let implicit = site.grant.token_from_browser();
    // The user's own issuer or endpoints win; the preset's issuer is used
    // only where discovery gives the right answer.
    let use_issuer = preset.issuer.is_some() && discoverable;
    if use_issuer {
        set(&mut site.issuer, fill(preset.issuer), key)?;
    } else {
        let authorize = if implicit {
            preset.implicit_authorize_url.or(preset.authorize_url)
        } else {
            preset.authorize_url
        };
        set(&mut site.authorize_url, fill(authorize), key)?;
        set(&mut site.token_url, fill(preset.token_url), key)?;
        set(&mut site.device_url, fill(preset.device_url), key)?;
    }
    let redirect = if implicit {
        preset.implicit_redirect_uri.or(preset.redirect_uri)
    } else {
        preset.redirect_uri
    };
    set(&mut site.redirect_uri, fill(redirect), key)?;
    let api_base = fill(preset.api_base);
    site.rare.edit(|r| set(&mut r.api_base, api_base, key))?;
    if !separator_given {
        if let Some(sep) = preset.scope_separator {
            site.scope_separator = sep.into();
        }
    }
    if site.secret.is_some() && site.client_auth.is_none() {
        site.client_auth = preset.secret_auth;
    }
    if let (None, Some(prompt)) = (&site.rare.prompt, preset.prompt) {
        site.rare.edit(|r| r.prompt = Some(prompt.to_owned()));
    }
    Ok(())
}

/// Fills `slot`, if the user left it unset, with the URL `value`.
fn set<T: From<WrittenUrl>>(
    slot: &mut Option<T>,
    value: Option<String>,
    key: &'static str,
) -> Result<(), PresetError> {
    if let (None, Some(value)) = (&slot, value) {
        let url = WrittenUrl::parse(&value).map_err(|message| PresetError { key, message })?;
        *slot = Some(T::from(url));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use url::Url;

    use super::ClientAuth;
    use crate::config::Config;

    fn site(body: &str) -> crate::config::SiteConfig {
        let c = Config::parse(
            Path::new("/c.toml"),
            &format!("[site.s]\nclient_id = \"id\"\n{body}"),
        );
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        (*c.sites["s"]).clone()
    }

    fn error(body: &str) -> String {
        let c = Config::parse(
            Path::new("/c.toml"),
            &format!("[site.s]\nclient_id = \"id\"\n{body}"),
        );
        assert!(c.sites.is_empty(), "expected an error for {body:?}");
        c.errors[0].to_string()
    }

    #[test]
    fn stackexchange() {
        let s = site("preset = \"stackexchange\"\napi_key = \"k\"\nscopes = [\"no_expiry\"]\n");
        assert_eq!(
            s.authorize_url.as_deref().map(Url::as_str),
            Some("https://stackoverflow.com/oauth")
        );
        assert_eq!(
            s.token_url.as_deref(),
            Some("https://stackoverflow.com/oauth/access_token/json")
        );
        assert_eq!(s.scope_separator, ",");
        assert_eq!(
            s.rare.api_base.as_deref().map(Url::as_str),
            Some("https://api.stackexchange.com/2.3")
        );
        assert_eq!(s.rare.api_key.as_deref(), Some("k"));
        assert_eq!(s.issuer, None);
        assert_eq!(s.revoke_url, None);
        assert_eq!(s.redirect_uri, None, "loopback by default");
        assert_eq!(s.client_auth, None, "a public client stays public");
    }

    #[test]
    fn stackexchange_with_a_secret_posts_it() {
        let s = site("preset = \"stackexchange\"\nclient_secret_env = \"SE\"\n");
        assert_eq!(s.effective_client_auth(), ClientAuth::Post);
        let s = site(
            "preset = \"stackexchange\"\nclient_secret_env = \"SE\"\nclient_auth = \"basic\"\n",
        );
        assert_eq!(s.effective_client_auth(), ClientAuth::Basic);
    }

    #[test]
    fn stackexchange_implicit_uses_the_dialog_and_paste_page() {
        let s = site("preset = \"stackexchange\"\ngrant = \"implicit\"\n");
        assert_eq!(
            s.authorize_url.as_deref().map(Url::as_str),
            Some("https://stackoverflow.com/oauth/dialog")
        );
        assert_eq!(
            s.redirect_uri.as_deref(),
            Some("https://stackexchange.com/oauth/login_success")
        );
    }

    #[test]
    fn teams() {
        let s = site("preset = \"stackoverflow-teams\"\nsubdomain = \"acme\"\n");
        assert_eq!(
            s.authorize_url.as_deref().map(Url::as_str),
            Some("https://acme.stackenterprise.co/oauth")
        );
        assert_eq!(
            s.token_url.as_deref(),
            Some("https://acme.stackenterprise.co/oauth/access_token/json")
        );
        assert_eq!(
            s.redirect_uri.as_deref(),
            Some("https://acme.stackenterprise.co/oauth/login_success")
        );
        assert_eq!(
            s.rare.api_base.as_deref().map(Url::as_str),
            Some("https://acme.stackenterprise.co/api/2.3")
        );
        assert_eq!(s.scope_separator, ",");
    }

    #[test]
    fn teams_needs_a_good_subdomain() {
        let msg = error("preset = \"stackoverflow-teams\"\n");
        assert!(
            msg.starts_with("/c.toml:1: site s: key `subdomain`: missing"),
            "{msg}"
        );
        let msg = error("preset = \"stackoverflow-teams\"\nsubdomain = \"acme.evil.com/x\"\n");
        assert!(
            msg.starts_with("/c.toml:4: site s: key `subdomain`"),
            "{msg}"
        );
    }

    #[test]
    fn github() {
        let s = site("preset = \"github\"\n");
        assert_eq!(
            s.authorize_url.as_deref().map(Url::as_str),
            Some("https://github.com/login/oauth/authorize")
        );
        assert_eq!(
            s.token_url.as_deref(),
            Some("https://github.com/login/oauth/access_token")
        );
        assert_eq!(
            s.device_url.as_deref().map(Url::as_str),
            Some("https://github.com/login/device/code")
        );
        assert_eq!(s.scope_separator, " ");
        assert_eq!(s.rare.api_base, None);
    }

    #[test]
    fn gitlab() {
        let s = site("preset = \"gitlab\"\n");
        assert_eq!(s.issuer.as_deref(), Some("https://gitlab.com"));
        assert_eq!(s.token_url, None, "discovered");
        let s = site("preset = \"gitlab\"\nbase_url = \"https://git.example.com/\"\n");
        assert_eq!(s.issuer.as_deref(), Some("https://git.example.com"));
    }

    #[test]
    fn google() {
        let s = site("preset = \"google\"\n");
        assert_eq!(s.issuer.as_deref(), Some("https://accounts.google.com"));
    }

    #[test]
    fn microsoft() {
        let s = site("preset = \"microsoft\"\nscopes = [\"openid\", \"offline_access\"]\n");
        assert_eq!(s.effective_prompt(), None, "no consent prompt at Entra ID");
        assert_eq!(s.issuer, None, "common cannot be discovered");
        assert_eq!(
            s.authorize_url.as_deref().map(Url::as_str),
            Some("https://login.microsoftonline.com/common/oauth2/v2.0/authorize")
        );
        assert_eq!(
            s.token_url.as_deref(),
            Some("https://login.microsoftonline.com/common/oauth2/v2.0/token")
        );
        assert_eq!(
            s.device_url.as_deref().map(Url::as_str),
            Some("https://login.microsoftonline.com/common/oauth2/v2.0/devicecode")
        );
        let s = site("preset = \"microsoft\"\ntenant = \"organizations\"\n");
        assert!(s.token_url.unwrap().contains("/organizations/"));
        let s = site("preset = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\n");
        assert_eq!(s.issuer, None);
        assert!(s.token_url.unwrap().contains("/contoso.onmicrosoft.com/"));
        let guid = "9188040d-6c67-4c5b-b112-36a304b66dad";
        let s = site(&format!("preset = \"microsoft\"\ntenant = \"{guid}\"\n"));
        assert_eq!(
            s.issuer.as_deref(),
            Some("https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0")
        );
        assert_eq!(s.token_url, None, "discovered");
        let msg = error("preset = \"microsoft\"\ntenant = \"a/b\"\n");
        assert!(msg.contains(":4: site s: key `tenant`"), "{msg}");
    }

    #[test]
    fn user_fields_win() {
        let s = site(
            "preset = \"stackexchange\"\nauthorize_url = \"http://127.0.0.1:9/oauth\"\n\
             token_url = \"http://127.0.0.1:9/oauth/access_token\"\napi_base = \"http://127.0.0.1:9/2.3\"\n\
             scope_separator = \" \"\nredirect_uri = \"https://stackexchange.com/oauth/login_success\"\n",
        );
        assert_eq!(
            s.authorize_url.as_deref().map(Url::as_str),
            Some("http://127.0.0.1:9/oauth")
        );
        assert_eq!(
            s.token_url.as_deref(),
            Some("http://127.0.0.1:9/oauth/access_token")
        );
        assert_eq!(
            s.rare.api_base.as_deref().map(Url::as_str),
            Some("http://127.0.0.1:9/2.3")
        );
        assert_eq!(s.scope_separator, " ");
        assert_eq!(
            s.redirect_uri.as_deref(),
            Some("https://stackexchange.com/oauth/login_success")
        );
        let s = site("preset = \"google\"\nissuer = \"https://accounts.example.com\"\n");
        assert_eq!(s.issuer.as_deref(), Some("https://accounts.example.com"));
        let s = site("preset = \"microsoft\"\ntoken_url = \"https://x.example/token\"\n");
        assert_eq!(s.token_url.as_deref(), Some("https://x.example/token"));
        assert!(s.authorize_url.unwrap().as_str().contains("/common/"));
    }

    #[test]
    fn unknown_preset_lists_the_known_ones() {
        let msg = error("scopes = []\npreset = \"stackoverflw\"\n");
        assert!(msg.starts_with("/c.toml:4: site s: key `preset`"), "{msg}");
        for name in super::names() {
            assert!(msg.contains(&format!("\"{name}\"")), "{msg}");
        }
    }

    #[test]
    fn parameters_of_other_presets_are_refused() {
        let msg = error("preset = \"github\"\nsubdomain = \"acme\"\n");
        assert!(msg.contains(":4: site s: key `subdomain`"), "{msg}");
        assert!(msg.contains("stackoverflow-teams"), "{msg}");
        let msg = error("issuer = \"https://a.example\"\ntenant = \"common\"\n");
        assert!(msg.contains("key `tenant`"), "{msg}");
    }

    #[test]
    fn without_a_preset_nothing_changes() {
        let s = site("issuer = \"https://a.example\"\n");
        assert_eq!(s.scope_separator, " ");
        assert_eq!(s.rare.api_base, None);
        assert_eq!(s.authorize_url, None);
    }
}
