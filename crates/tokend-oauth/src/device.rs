//! The device authorization grant (RFC 8628): start, then poll until the
//! user has approved on another device.

use crate::error::{loggable_url, Error};
use crate::http::{FormRequest, Http, RawResponse};
use crate::response::{self, str_field};
use crate::secret::DeviceCode;
use crate::site::OAuthSite;
use crate::token::{self, seconds, TokenResponse};

/// RFC 8628 §3.2: poll every 5 s unless told otherwise.
pub const DEFAULT_INTERVAL: u64 = 5;
/// Used when a provider omits the (required) `expires_in`: long enough for
/// a user to find their phone, short enough not to poll forever.
pub const DEFAULT_DEVICE_EXPIRY: u64 = 900;

/// What to show the user, and what to poll with.
#[derive(Clone, Debug)]
pub struct DeviceAuthorization {
    pub device_code: DeviceCode,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    /// Seconds between polls; add 5 after each [`DevicePoll::SlowDown`].
    pub interval: u64,
}

/// One poll's outcome. `access_denied` and `expired_token` are errors
/// ([`Error::Provider`]), as is anything else the provider refuses.
#[derive(Debug)]
pub enum DevicePoll {
    Pending,
    /// Keep polling, 5 s slower (RFC 8628 §3.5).
    SlowDown,
    Done(TokenResponse),
}

impl OAuthSite {
    pub fn device_start_request(&self, scopes: &[String]) -> Result<FormRequest, Error> {
        let url = self.provider.device_url.clone().ok_or_else(|| {
            Error::Invalid("the site has no device_url, so it cannot use the device flow".into())
        })?;
        let mut request = FormRequest::post(url);
        if !scopes.is_empty() {
            request.param("scope", &self.join_scopes(scopes));
        }
        self.finish(request)
    }

    pub fn device_poll_request(&self, device: &DeviceAuthorization) -> Result<FormRequest, Error> {
        let mut request = FormRequest::post(self.provider.token_url.clone());
        request.param("grant_type", "urn:ietf:params:oauth:grant-type:device_code");
        request.param("device_code", device.device_code.expose());
        self.finish(request)
    }

    pub async fn device_start(
        &self,
        http: &Http,
        scopes: &[String],
    ) -> Result<DeviceAuthorization, Error> {
        let mut request = self.device_start_request(scopes)?;
        self.client
            .sign(http, &mut request, &self.provider.token_url)
            .await?;
        let raw = http.send(&request).await?;
        parse_device_authorization(&raw)
            .map_err(|e| e.at(format!("device endpoint {}", loggable_url(&request.url))))
    }

    pub async fn device_poll(
        &self,
        http: &Http,
        device: &DeviceAuthorization,
    ) -> Result<DevicePoll, Error> {
        let request = self.device_poll_request(device)?;
        // The same path as every other grant: a DPoP proof (and nonce) when
        // the site has a key, and a Bearer answer refused for a DPoP site.
        let raw = self.token_send(http, &request).await?;
        let poll = match parse_device_poll(&raw) {
            Ok(DevicePoll::Done(token)) => self.require_bound(token).map(DevicePoll::Done),
            other => other,
        };
        poll.map_err(|e| e.at(format!("token endpoint {}", loggable_url(&request.url))))
    }
}

/// Parse the device authorization response (RFC 8628 §3.2). Google says
/// `verification_url`; both spellings are accepted.
pub fn parse_device_authorization(raw: &RawResponse) -> Result<DeviceAuthorization, Error> {
    let endpoint = "the device endpoint";
    let fields = response::fields(raw.status, raw.content_type.as_deref(), &raw.body, endpoint)?;
    let missing = |what: &str| Error::BadResponse {
        status: raw.status,
        what: format!("a response without {what}"),
        endpoint: endpoint.into(),
    };
    let device_code = str_field(&fields, "device_code").ok_or_else(|| missing("device_code"))?;
    let user_code = str_field(&fields, "user_code").ok_or_else(|| missing("user_code"))?;
    let verification_uri = str_field(&fields, "verification_uri")
        .or_else(|| str_field(&fields, "verification_url"))
        .ok_or_else(|| missing("verification_uri"))?;
    Ok(DeviceAuthorization {
        device_code: DeviceCode::new(device_code.to_owned()),
        user_code: user_code.to_owned(),
        verification_uri: verification_uri.to_owned(),
        verification_uri_complete: str_field(&fields, "verification_uri_complete")
            .map(str::to_owned),
        expires_in: seconds(fields.get("expires_in")).unwrap_or(DEFAULT_DEVICE_EXPIRY),
        interval: seconds(fields.get("interval")).unwrap_or(DEFAULT_INTERVAL),
    })
}

/// Parse one poll of the token endpoint (RFC 8628 §3.5).
pub fn parse_device_poll(raw: &RawResponse) -> Result<DevicePoll, Error> {
    match response::fields(
        raw.status,
        raw.content_type.as_deref(),
        &raw.body,
        "the token endpoint",
    ) {
        Ok(fields) => token::from_fields(&fields)
            .map(DevicePoll::Done)
            .map_err(|what| Error::BadResponse {
                status: raw.status,
                what: what.into(),
                endpoint: "the token endpoint".into(),
            }),
        Err(Error::Provider { error, .. }) if error == "authorization_pending" => {
            Ok(DevicePoll::Pending)
        }
        Err(Error::Provider { error, .. }) if error == "slow_down" => Ok(DevicePoll::SlowDown),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::provider::Provider;
    use url::Url;

    fn raw(status: u16, body: &str) -> RawResponse {
        RawResponse {
            status,
            content_type: Some("application/json".into()),
            location: None,
            dpop_nonce: None,
            body: body.as_bytes().to_vec(),
        }
    }

    fn site() -> OAuthSite {
        let mut provider = Provider::new(Url::parse("https://x/token").unwrap());
        provider.device_url = Some(Url::parse("https://x/device").unwrap());
        let mut site = OAuthSite::new(provider, Client::public("cid"));
        site.extra_params = vec![("audience".into(), "api".into())];
        site
    }

    #[test]
    fn start_request_and_response() {
        let req = site()
            .device_start_request(&["a".into(), "b".into()])
            .unwrap();
        assert_eq!(req.url.as_str(), "https://x/device");
        assert_eq!(req.body(), "scope=a+b&client_id=cid&audience=api");
        let device = parse_device_authorization(&raw(
            200,
            r#"{"device_code":"DC-SECRET","user_code":"ABCD-EFGH","verification_url":"https://x/activate","expires_in":"1800"}"#,
        ))
        .unwrap();
        assert_eq!(device.user_code, "ABCD-EFGH");
        assert_eq!(device.verification_uri, "https://x/activate");
        assert_eq!(device.expires_in, 1800);
        assert_eq!(device.interval, DEFAULT_INTERVAL);
        assert!(!format!("{device:?}").contains("DC-SECRET"));

        let req = site().device_poll_request(&device).unwrap();
        assert_eq!(
            req.form_value("grant_type"),
            Some("urn:ietf:params:oauth:grant-type:device_code")
        );
        assert_eq!(req.form_value("device_code"), Some("DC-SECRET"));
        assert_eq!(req.form_value("client_id"), Some("cid"));
    }

    #[test]
    fn missing_fields_and_no_device_url() {
        let err = parse_device_authorization(&raw(200, r#"{"device_code":"d"}"#)).unwrap_err();
        assert!(err.to_string().contains("without user_code"), "{err}");
        let mut s = site();
        std::sync::Arc::make_mut(&mut s.provider).device_url = None;
        assert!(matches!(
            s.device_start_request(&[]),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn poll_outcomes() {
        let poll = |status: u16, body: &str| parse_device_poll(&raw(status, body));
        assert!(matches!(
            poll(400, r#"{"error":"authorization_pending"}"#),
            Ok(DevicePoll::Pending)
        ));
        // GitHub answers 200 while pending.
        assert!(matches!(
            poll(200, r#"{"error":"authorization_pending"}"#),
            Ok(DevicePoll::Pending)
        ));
        assert!(matches!(
            poll(400, r#"{"error":"slow_down"}"#),
            Ok(DevicePoll::SlowDown)
        ));
        for refusal in ["access_denied", "expired_token"] {
            let body = format!(r#"{{"error":"{refusal}"}}"#);
            match poll(400, &body) {
                Err(Error::Provider { error, .. }) => assert_eq!(error, refusal),
                other => panic!("{other:?}"),
            }
        }
        match poll(200, r#"{"access_token":"at","expires_in":60}"#) {
            Ok(DevicePoll::Done(t)) => assert_eq!(t.access_token.expose(), "at"),
            other => panic!("{other:?}"),
        }
    }
}
