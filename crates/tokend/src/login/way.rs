//! Which way a login runs: [`Way`] is the one enum of them. What the caller
//! asks for ([`LoginMode`], on the wire) and how the site's grant logs in
//! ([`LoginBy`]) give the [`Plan`] a login starts with; the plan gives the
//! way once the provider is known; errors and the log name that way.

use token_proto::LoginMode;
use tokio::sync::mpsc;

use crate::config::grant::LoginBy;
use crate::config::SiteConfig;
use crate::error::SiteError;
use crate::loopback::is_loopback;

/// Which way a login runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    /// A browser, and tokend's loopback listener for its redirect.
    Browser,
    /// RFC 8628: a code the user enters on any device.
    Device,
    /// A browser, and the user pastes its final URL (or the code) back.
    Paste,
}

impl Way {
    /// Its name in the log.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Way::Browser => "browser",
            Way::Device => "device",
            Way::Paste => "paste",
        }
    }

    /// The command that tries again.
    pub(crate) fn again(self, site: &str) -> String {
        match self {
            Way::Browser => format!("token login {site}"),
            Way::Device => format!("token login {site} --device"),
            Way::Paste => format!("token login {site} --paste"),
        }
    }
}

/// The way a login is to run, as planned when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    Run(Way),
    /// No browser where the caller is: the device flow if the provider
    /// (once discovered) offers it, else paste-back.
    DeviceElsePaste,
}

impl Plan {
    /// How a login asked for as `asked` runs at a site that logs in `by`,
    /// whose redirect tokend can listen on (`listens`); `None` when there
    /// is nobody to ask (a token call stands for the login).
    pub(crate) fn new(by: LoginBy, asked: LoginMode, listens: bool) -> Option<Plan> {
        use LoginMode::{Browser, Device, NoBrowser, Paste};
        Some(match (by, asked) {
            (LoginBy::TokenCall, Browser | Device | NoBrowser | Paste) => return None,
            (LoginBy::Device, Browser | NoBrowser | Device)
            | (LoginBy::Code | LoginBy::Fragment, Device) => Plan::Run(Way::Device),
            (LoginBy::Code, Browser) if listens => Plan::Run(Way::Browser),
            (LoginBy::Code, NoBrowser) if listens => Plan::DeviceElsePaste,
            (LoginBy::Code | LoginBy::Fragment, Browser | NoBrowser | Paste)
            | (LoginBy::Device, Paste) => Plan::Run(Way::Paste),
        })
    }

    /// Whether the user may paste into the login (the `paste` request
    /// finds where its input goes).
    pub(crate) fn takes_paste(self) -> bool {
        match self {
            Plan::Run(Way::Paste) | Plan::DeviceElsePaste => true,
            Plan::Run(Way::Browser | Way::Device) => false,
        }
    }

    /// The way it runs once the provider is known: whether it offers the
    /// device flow.
    pub(crate) fn way(self, device_offered: bool) -> Way {
        match self {
            Plan::Run(way) => way,
            Plan::DeviceElsePaste if device_offered => Way::Device,
            Plan::DeviceElsePaste => Way::Paste,
        }
    }
}

/// How a login runs: its plan, and where a paste-back login's input
/// arrives.
#[derive(Debug)]
pub(crate) struct How {
    pub(super) plan: Plan,
    pub(super) input: mpsc::Receiver<String>,
}

impl How {
    /// How a login asked for as `asked` runs for `cfg`: the grant's way,
    /// paste-back for redirects tokend cannot listen on. A login that takes
    /// a paste also gives where the `paste` request delivers the input.
    pub(crate) fn new(
        cfg: &SiteConfig,
        asked: LoginMode,
    ) -> Result<(How, Option<mpsc::Sender<String>>), SiteError> {
        let listens = cfg
            .redirect_uri
            .as_ref()
            .is_none_or(|u| is_loopback(u.url()));
        let Some(plan) = Plan::new(cfg.grant.login(), asked, listens) else {
            let name = &cfg.name;
            return Err(SiteError::BadRequest(format!(
                "site {name}: grant = \"{}\" logs in without the user: `token get {name}` fetches a token",
                cfg.grant.name()
            )));
        };
        let (tx, input) = mpsc::channel(1);
        Ok((How { plan, input }, plan.takes_paste().then_some(tx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASKED: [LoginMode; 4] = [
        LoginMode::Browser,
        LoginMode::NoBrowser,
        LoginMode::Device,
        LoginMode::Paste,
    ];

    fn plans(by: LoginBy, listens: bool) -> Vec<Option<Plan>> {
        ASKED.iter().map(|a| Plan::new(by, *a, listens)).collect()
    }

    const BROWSER: Option<Plan> = Some(Plan::Run(Way::Browser));
    const DEVICE: Option<Plan> = Some(Plan::Run(Way::Device));
    const PASTE: Option<Plan> = Some(Plan::Run(Way::Paste));
    const EITHER: Option<Plan> = Some(Plan::DeviceElsePaste);

    #[test]
    fn a_code_login_listens_where_it_can_else_takes_a_paste() {
        // Browser, no browser, --device, --paste.
        assert_eq!(plans(LoginBy::Code, true), [BROWSER, EITHER, DEVICE, PASTE]);
        assert_eq!(plans(LoginBy::Code, false), [PASTE, PASTE, DEVICE, PASTE]);
    }

    #[test]
    fn a_device_code_site_uses_the_device_flow_unless_a_paste_is_asked_for() {
        for listens in [true, false] {
            assert_eq!(
                plans(LoginBy::Device, listens),
                [DEVICE, DEVICE, DEVICE, PASTE]
            );
        }
    }

    #[test]
    fn the_implicit_token_is_pasted_back() {
        for listens in [true, false] {
            assert_eq!(
                plans(LoginBy::Fragment, listens),
                [PASTE, PASTE, DEVICE, PASTE]
            );
        }
    }

    #[test]
    fn a_token_call_has_no_plan() {
        assert_eq!(plans(LoginBy::TokenCall, true), [None; 4]);
    }

    #[test]
    fn no_browser_becomes_the_device_flow_where_the_provider_offers_it() {
        assert_eq!(Plan::DeviceElsePaste.way(true), Way::Device);
        assert_eq!(Plan::DeviceElsePaste.way(false), Way::Paste);
        assert_eq!(Plan::Run(Way::Browser).way(true), Way::Browser);
        assert!(Plan::DeviceElsePaste.takes_paste());
        assert!(Plan::Run(Way::Paste).takes_paste());
        assert!(!Plan::Run(Way::Device).takes_paste());
        assert_eq!(Way::Paste.again("a"), "token login a --paste");
        assert_eq!(Way::Device.name(), "device");
    }
}
