//! Device authorization (RFC 8628): show a user code and a URL (and a QR
//! code of the complete URL), then poll at the provider's interval.

use std::sync::Arc;

use token_proto::Event;
use tokend_oauth::{DevicePoll, OAuthSite};

use super::{timed_out, Ctx, Got, Started, Way};
use crate::error::SiteError;

pub(super) async fn start(ctx: &Ctx, oauth: Arc<OAuthSite>) -> Result<Started, SiteError> {
    let cfg = &ctx.cfg;
    let timeout = ctx.deps.login_timeout.get();
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
        .get()
        .min(std::time::Duration::from_secs(dev.expires_in.max(1)));
    let deadline = tokio::time::Instant::now() + limit;
    let mut interval = clamp_interval(dev.interval);
    loop {
        let Some(wait) = next_wait(interval, tokio::time::Instant::now(), deadline) else {
            return Err(timed_out(name));
        };
        tokio::time::sleep(wait).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(timed_out(name));
        }
        let sent_at = deps.clock.now();
        match oauth.device_poll(&deps.http, &dev).await {
            Ok(DevicePoll::Pending) => {}
            Ok(DevicePoll::SlowDown) => interval = clamp_interval(interval + 5),
            Ok(DevicePoll::Done(resp)) => {
                return super::checked(&ctx, &oauth, resp, Way::Device, sent_at).await;
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

/// The longest wait between polls, whatever the provider says (its
/// `interval`, or `slow_down` after `slow_down`): a login must not sit
/// asleep for hours after the user approved.
const MAX_INTERVAL: u64 = 60;

fn clamp_interval(seconds: u64) -> u64 {
    seconds.clamp(1, MAX_INTERVAL)
}

/// How long to sleep before the next poll: the interval, cut short at the
/// login's deadline; `None` once the deadline has passed.
fn next_wait(
    interval: u64,
    now: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> Option<std::time::Duration> {
    let left = deadline
        .checked_duration_since(now)
        .filter(|d| !d.is_zero())?;
    Some(std::time::Duration::from_secs(interval).min(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_wait_at_most_a_minute_and_never_past_the_deadline() {
        assert_eq!(clamp_interval(0), 1);
        assert_eq!(clamp_interval(5), 5);
        assert_eq!(clamp_interval(86_400), MAX_INTERVAL);
        assert_eq!(clamp_interval(u64::MAX - 1), MAX_INTERVAL);
        let now = tokio::time::Instant::now();
        let secs = std::time::Duration::from_secs;
        assert_eq!(next_wait(5, now, now + secs(300)), Some(secs(5)));
        assert_eq!(next_wait(60, now, now + secs(7)), Some(secs(7)));
        assert_eq!(next_wait(5, now, now), None);
        assert_eq!(next_wait(5, now + secs(1), now), None);
    }
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
