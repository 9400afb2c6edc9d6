//! Where a webhook may point. Users add webhooks, and the registry then makes requests
//! from inside its own network and shows them the answers: unless the operator allows
//! it, a webhook may reach public addresses only (checked on the URL when it is added,
//! and on every address a name resolves to when it is sent, so a name re-pointed at an
//! internal address later is refused too).

use std::net::IpAddr;

use berth_addresses::is_public;

use crate::EventsError;

/// Checks a webhook URL as added: http(s), a host, no credentials, and (unless
/// `allow_private`) not an internal address or name.
pub fn check_webhook_url(text: &str, allow_private: bool) -> Result<url::Url, EventsError> {
    let invalid = |why: &str| EventsError::InvalidWebhook(format!("webhook URL {text:?}: {why}"));
    if text.len() > 2048 {
        return Err(invalid("longer than 2048 characters"));
    }
    let url = url::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("expected http:// or https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials do not belong in the URL (use a secret)",
        ));
    }
    let Some(host) = url.host() else {
        return Err(invalid("no host"));
    };
    if !allow_private {
        let internal = match host {
            url::Host::Ipv4(ip) => !is_public(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => !is_public(IpAddr::V6(ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        if internal {
            return Err(invalid("internal addresses are not allowed for webhooks"));
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked() {
        for bad in [
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://localhost/hook",
            "http://a.localhost./hook",
            "http://0x7f000001/hook",
            "http://2130706433/hook",
            "not a url",
        ] {
            assert!(check_webhook_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_webhook_url("https://hooks.example.com/x?y=1", false).is_ok());
        assert!(check_webhook_url("http://127.0.0.1:8080/hook", true).is_ok());
    }
}
