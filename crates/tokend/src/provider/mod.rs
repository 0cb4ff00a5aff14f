//! A site's provider, as the daemon talks to it: the OAuth client (its
//! discovery and its client secret) and the checks of the ID tokens it
//! issues. Used by the site's actor and by the logins it runs.

pub(crate) mod client;
pub(crate) mod idtoken;
pub(crate) mod secret;
