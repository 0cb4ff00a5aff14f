//! Device authorization (RFC 8628): show a user code and a URL (and a QR
//! code of the complete URL), then poll at the provider's interval.

use std::sync::Arc;

use token_proto::Event;
use tokend_oauth::{DevicePoll, OAuthSite};

use super::{timed_out, Ctx, Got, Started, Way};
use crate::site::SiteError;

pub(super) async fn start(ctx: &Ctx, oauth: Arc<OAuthSite>) -> Result<Started, SiteError> {
    let cfg = &ctx.cfg;
    let timeout = ctx.deps.login_timeout;
    let dev = oauth
        .device_start(&ctx.deps.http, &cfg.scopes)
        .await
        .map_err(|source| SiteError::Provider {
            site: cfg.name.clone(),
            source,
        })?;
    let ev = Event::DeviceCode {
        site: cfg.name.clone(),
        user_code: dev.user_code.clone(),
        verification_uri: dev.verification_uri.clone(),
        verification_uri_complete: dev.verification_uri_complete.clone(),
        timeout: timeout.as_secs().min(dev.expires_in),
        qr: dev.verification_uri_complete.as_deref().and_then(qr_text),
    };
    let own = Ctx {
        cfg: ctx.cfg.clone(),
        deps: ctx.deps.clone(),
        dpop: ctx.dpop.clone(),
    };
    let task = device_login(own, oauth, dev);
    Ok(Started {
        task: Box::pin(task),
        first: ev.clone(),
        joined: ev,
        links: None,
    })
}

/// A QR code of `url` as Unicode half blocks (two modules a character row),
/// dark on light, with the quiet zone a phone camera needs.
fn qr_text(url: &str) -> Option<String> {
    let code = qrcode::QrCode::new(url.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// Polls until the user approves. Each poll is a token-endpoint call that
/// can only yield this login's token, which goes to the site to keep.
async fn device_login(
    ctx: Ctx,
    oauth: Arc<OAuthSite>,
    dev: tokend_oauth::DeviceAuthorization,
) -> Result<Got, SiteError> {
    let (name, deps) = (&ctx.cfg.name, &ctx.deps);
    let limit = deps
        .login_timeout
        .min(std::time::Duration::from_secs(dev.expires_in.max(1)));
    let deadline = tokio::time::Instant::now() + limit;
    let mut interval = dev.interval.max(1);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(timed_out(name));
        }
        match oauth.device_poll(&deps.http, &dev).await {
            Ok(DevicePoll::Pending) => {}
            Ok(DevicePoll::SlowDown) => interval += 5,
            Ok(DevicePoll::Done(resp)) => {
                return super::checked(&ctx, &oauth, resp, Way::Device).await;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(site = %name, "device poll failed, retrying: {e}");
            }
            Err(source) => {
                return Err(SiteError::DeviceRefused {
                    site: name.clone(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_qr_code_is_square_text() {
        let qr = qr_text("https://auth.example.com/device?user_code=WDJB-MJHT").unwrap_or_default();
        let lines: Vec<&str> = qr.lines().collect();
        // Two modules a character row: about half as many rows as columns.
        let width = lines[0].chars().count();
        assert!(width >= 29, "{width}");
        assert!(
            lines.len() * 2 >= width && lines.len() * 2 <= width + 2,
            "{}x{}",
            width,
            lines.len()
        );
        assert!(lines.iter().all(|l| l.chars().count() == width));
    }
}
