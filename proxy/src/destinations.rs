//! Where an upstream may send Berth's requests. Its blobs' redirects (pre-signed
//! storage URLs) and its token realms name other hosts, which Berth then asks from
//! inside the operator's network, relaying what it can of the answers. Those may reach
//! internal addresses only when the upstream itself is internal (an internal
//! registry's storage and token service are internal too); a public upstream, such as
//! Docker Hub, cannot point Berth at the network it runs in.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_addresses::is_public;

pub(crate) struct Destinations {
    /// The upstream's host, as in its URL.
    upstream_host: String,
    /// Whether the upstream is at an internal address (known from its URL when that
    /// is an address, else once its name is resolved, before any redirect it sends).
    internal: AtomicBool,
}

impl Destinations {
    pub fn new(upstream: &url::Url) -> Arc<Destinations> {
        Arc::new(Destinations {
            upstream_host: upstream.host_str().unwrap_or_default().to_owned(),
            internal: AtomicBool::new(address_in(upstream).is_some_and(|ip| !is_public(ip))),
        })
    }

    /// Whether a redirect to `url` may be followed, as far as an address in it says
    /// (a name is checked when it is resolved, by [`Resolver`]).
    pub fn allows(&self, url: &url::Url) -> bool {
        address_in(url).is_none_or(|ip| is_public(ip) || self.internal.load(Ordering::Relaxed))
    }
}

/// The address `url` names as its host, if it names one rather than a name.
fn address_in(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// Resolves names for requests to and through the upstream: its own host to whatever
/// it resolves to (noting whether that is internal), any other to public addresses
/// only unless the upstream is internal. The connection goes to an address checked
/// here, never to a second lookup's.
pub(crate) struct Resolver(pub Arc<Destinations>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = berth_addresses::resolve(&host).await?;
            let upstream = host.eq_ignore_ascii_case(&destinations.upstream_host);
            if upstream && addresses.iter().any(|a| !is_public(a.ip())) {
                destinations.internal.store(true, Ordering::Relaxed);
            }
            if upstream || destinations.internal.load(Ordering::Relaxed) {
                let all: reqwest::dns::Addrs = Box::new(addresses.into_iter());
                return Ok(all);
            }
            berth_addresses::only_public(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    #[tokio::test]
    async fn a_public_upstream_cannot_send_requests_inside() {
        let d = Destinations::new(&url("https://registry-1.docker.io"));
        assert!(!d.allows(&url("https://169.254.169.254/latest")));
        assert!(!d.allows(&url("http://10.0.0.5/x")));
        assert!(!d.allows(&url("http://[::1]/x")));
        assert!(d.allows(&url("https://93.184.216.34/x")));
        assert!(d.allows(&url("https://production.cloudflare.docker.com/x")));
        // Names are judged by what they resolve to.
        let refused = Resolver(d.clone())
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("refused");
        assert!(refused.to_string().contains("not a public address"));
    }

    #[tokio::test]
    async fn an_internal_upstream_may() {
        let d = Destinations::new(&url("http://10.1.2.3:5000"));
        assert!(d.allows(&url("http://10.0.0.5/x")));
        // Known once its name resolves to an internal address.
        let d = Destinations::new(&url("http://localhost:5000"));
        assert!(!d.allows(&url("http://127.0.0.1:9000/x")));
        let upstream = Resolver(d.clone())
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap();
        assert!(upstream.into_iter().all(|a| a.ip().is_loopback()));
        assert!(d.allows(&url("http://127.0.0.1:9000/x")));
        assert!(Resolver(d)
            .resolve("localhost".parse().unwrap())
            .await
            .is_ok());
    }
}
