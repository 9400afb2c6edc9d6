//! Checking a webhook before it is added (the web UI, the JSON API and `berthd`
//! share these rules).

use berth_storage::events::webhooks::NewWebhook;

use crate::{check_webhook_url, EventsError};

const MAX_NAME: usize = 100;
const MAX_SECRET: usize = 256;

/// What a user asked for, unchecked.
pub struct WebhookRequest<'a> {
    pub namespace: String,
    pub repository: Option<String>,
    pub name: &'a str,
    pub url: &'a str,
    pub secret: Option<&'a str>,
    pub created_by: String,
}

/// A webhook to add: a name of 1 to 100 printable characters, a URL `check_webhook_url`
/// accepts, and a secret (blank: none) of at most 256 bytes.
pub fn checked(request: WebhookRequest, allow_private: bool) -> Result<NewWebhook, EventsError> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(EventsError::InvalidWebhook(format!(
            "a webhook needs a name of 1 to {MAX_NAME} printable characters"
        )));
    }
    let url = check_webhook_url(request.url.trim(), allow_private)?;
    let secret = request.secret.map(str::trim).filter(|s| !s.is_empty());
    if secret.is_some_and(|s| s.len() > MAX_SECRET) {
        return Err(EventsError::InvalidWebhook(format!(
            "a webhook secret is at most {MAX_SECRET} bytes"
        )));
    }
    Ok(NewWebhook {
        namespace: request.namespace,
        repository: request.repository,
        name: name.to_owned(),
        url: url.to_string(),
        secret: secret.map(str::to_owned),
        created_by: request.created_by,
    })
}
