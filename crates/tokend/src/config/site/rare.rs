//! The keys of a site that most sites leave out, boxed only when a site
//! sets one: at a thousand sites they are 0.2 MiB of unused fields
//! otherwise, moved with each site as the config is read.

use std::ops::Deref;

use url::Url;

use super::WrittenUrl;
use crate::files::TokenFile;

/// The keys themselves (see [`super::SiteConfig`]).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RareKeys {
    pub(crate) extra_params: Vec<(String, String)>,
    /// `login_hint` sent to the authorization endpoint: which account.
    pub(crate) login_hint: Option<String>,
    /// The user name git sends beside the token; `None`: `oauth2`.
    pub(crate) username: Option<String>,
    pub(crate) api_key: Option<String>,
    pub(crate) preset: Option<String>,
    pub(crate) subdomain: Option<String>,
    /// As written: a preset's issuer is made from it.
    pub base_url: Option<WrittenUrl>,
    pub(crate) tenant: Option<String>,
    /// Stack Exchange API base (`https://api.stackexchange.com/2.3`): logout
    /// invalidates the access token there instead of RFC 7009 revocation.
    pub api_base: Option<Box<Url>>,
    /// `prompt` as written (`""`: send none); `None`: the default.
    pub(crate) prompt: Option<String>,
    /// `[[site.NAME.file]]`: token files kept fresh.
    pub(crate) files: Vec<TokenFile>,
}

/// A site's [`RareKeys`], in a box only when one is set. Reads as
/// `RareKeys` (none set when there is no box).
#[derive(Clone, Debug, Default)]
pub struct Rare(Option<Box<RareKeys>>);

static NONE: RareKeys = RareKeys {
    extra_params: Vec::new(),
    login_hint: None,
    username: None,
    api_key: None,
    preset: None,
    subdomain: None,
    base_url: None,
    tenant: None,
    api_base: None,
    prompt: None,
    files: Vec::new(),
};

impl Rare {
    pub(crate) fn new(keys: RareKeys) -> Rare {
        Rare((keys != NONE).then(|| Box::new(keys)))
    }

    /// Changes the keys with `change`, boxing them only if one ends up set.
    pub(crate) fn edit<T>(&mut self, change: impl FnOnce(&mut RareKeys) -> T) -> T {
        let mut keys = self.0.take().map_or_else(RareKeys::default, |b| *b);
        let out = change(&mut keys);
        *self = Rare::new(keys);
        out
    }
}

impl Deref for Rare {
    type Target = RareKeys;
    fn deref(&self) -> &RareKeys {
        self.0.as_deref().unwrap_or(&NONE)
    }
}

/// By the keys: no box and an empty one are the same.
impl PartialEq for Rare {
    fn eq(&self, other: &Rare) -> bool {
        **self == **other
    }
}

impl Eq for Rare {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_that_sets_no_rare_key_has_no_box() {
        assert!(Rare::new(RareKeys::default()).0.is_none());
        let mut rare = Rare::default();
        rare.edit(|k| k.tenant = Some("t".into()));
        assert_eq!(rare.tenant.as_deref(), Some("t"));
        rare.edit(|k| k.tenant = None);
        assert!(rare.0.is_none());
        assert_eq!(rare, Rare::default());
    }
}
