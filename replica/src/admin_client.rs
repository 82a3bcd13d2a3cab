//! A small blocking HTTP client for a replica's status and admin endpoints,
//! used by the CLI and the local cluster (and, later, by the operator).

use std::time::Duration;

use crate::api::{ErrorBody, Status, Transferred};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The replica could not be reached or did not answer in time.
    #[error("{url}: {reason}")]
    Unreachable {
        /// What was called.
        url: String,
        /// The transport's error.
        reason: String,
    },
    /// The replica answered with an error.
    #[error("{url}: HTTP {status}: {reason}")]
    Refused {
        /// What was called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The replica's reason.
        reason: String,
    },
}

/// A client for one replica's HTTP address (`host:port`).
#[derive(Clone)]
pub struct AdminClient {
    agent: ureq::Agent,
    base: String,
}

impl AdminClient {
    /// A client for `address` whose calls give up after `timeout`.
    pub fn new(address: &str, timeout: Duration) -> AdminClient {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let base = if address.starts_with("http://") {
            address.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", address.trim_end_matches('/'))
        };
        AdminClient { agent, base }
    }

    /// `GET /status`.
    pub fn status(&self) -> Result<Status, AdminError> {
        let url = format!("{}/status", self.base);
        let response = self.agent.get(&url).call();
        Self::json(url, response)
    }

    /// `POST /admin/transfer-leadership[?to=id]`.
    pub fn transfer_leadership(&self, to: Option<&str>) -> Result<Transferred, AdminError> {
        let url = match to {
            Some(to) => format!("{}/admin/transfer-leadership?to={to}", self.base),
            None => format!("{}/admin/transfer-leadership", self.base),
        };
        let response = self.agent.post(&url).send_empty();
        Self::json(url, response)
    }

    fn json<T: serde::de::DeserializeOwned>(
        url: String,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, AdminError> {
        let mut response = response.map_err(|err| AdminError::Unreachable {
            url: url.clone(),
            reason: err.to_string(),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|err| AdminError::Unreachable {
                url: url.clone(),
                reason: err.to_string(),
            })?;
        if !(200..300).contains(&status) {
            let reason = serde_json::from_str::<ErrorBody>(&body)
                .map(|error| error.reason)
                .unwrap_or(body);
            return Err(AdminError::Refused {
                url,
                status,
                reason,
            });
        }
        serde_json::from_str(&body).map_err(|err| AdminError::Unreachable {
            url,
            reason: format!("unreadable answer: {err}"),
        })
    }
}
