//! A thin client of chat-api's fixed `/api/v1` contract, and of its `/stats` document: just what
//! seeding, the workload and the measurements use.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use reqwest::{StatusCode, header};
use serde::Deserialize;
use serde_json::json;

/// A client of one chat-api, or of several instances of it: with several base URLs each request
/// goes to the next one (round-robin), as a load balancer would send it.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
}

#[derive(Debug, Deserialize)]
struct Registered {
    user: IdOnly,
    token: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct IdOnly {
    pub(crate) id: String,
}

#[derive(Debug, Deserialize)]
struct MessagePage {
    messages: Vec<IdOnly>,
}

/// A page read: what happened, the ETag, and the message ids when they were asked for.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) outcome: Outcome,
    pub(crate) etag: Option<String>,
    pub(crate) ids: Option<Vec<String>>,
}

/// What one request did, for the statistics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) status: u16,
}

impl Outcome {
    pub(crate) fn is_error(self) -> bool {
        !(200..400).contains(&self.status)
    }
}

impl Client {
    /// `base` is one URL, or several separated by commas (instances of one deployment).
    pub(crate) fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .build()
            .context("building the HTTP client")?;
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        anyhow::ensure!(!bases.is_empty(), "no chat-api URL in {base:?}");
        Ok(Client {
            http,
            bases: Arc::new(bases),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn url(&self, path: &str) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        format!("{}{path}", self.bases[i])
    }

    /// How many instances the client spreads its requests over.
    pub(crate) fn instances(&self) -> usize {
        self.bases.len()
    }

    pub(crate) async fn register(&self, name: &str) -> anyhow::Result<(String, String)> {
        let res = self
            .http
            .post(self.url("/api/v1/users"))
            .json(&json!({ "name": name }))
            .send()
            .await?;
        let res = expect(res, StatusCode::CREATED, "register").await?;
        let body: Registered = res.json().await?;
        Ok((body.user.id, body.token))
    }

    pub(crate) async fn create_channel(&self, token: &str, name: &str) -> anyhow::Result<String> {
        let res = self
            .http
            .post(self.url("/api/v1/channels"))
            .bearer_auth(token)
            .json(&json!({ "name": name, "kind": "public" }))
            .send()
            .await?;
        let res = expect(res, StatusCode::CREATED, "create channel").await?;
        Ok(res.json::<IdOnly>().await?.id)
    }

    pub(crate) async fn join(&self, token: &str, channel: &str) -> anyhow::Result<()> {
        let res = self
            .http
            .put(self.url(&format!("/api/v1/channels/{channel}/members/me")))
            .bearer_auth(token)
            .send()
            .await?;
        expect(res, StatusCode::NO_CONTENT, "join").await?;
        Ok(())
    }

    pub(crate) async fn post(
        &self,
        token: &str,
        channel: &str,
        content: &str,
    ) -> anyhow::Result<(Outcome, Option<String>)> {
        let res = self
            .http
            .post(self.url(&format!("/api/v1/channels/{channel}/messages")))
            .bearer_auth(token)
            .json(&json!({ "content": content }))
            .send()
            .await?;
        let status = res.status().as_u16();
        let id = if res.status() == StatusCode::CREATED {
            res.json::<IdOnly>().await.ok().map(|m| m.id)
        } else {
            let _ = res.bytes().await;
            None
        };
        Ok((Outcome { status }, id))
    }

    /// `GET …/messages?limit=…[&cursor=id]`: the status, the ETag, and with `want_ids` the ids on
    /// the page (newest first; parsing the body costs the client time, so only when checking).
    pub(crate) async fn messages(
        &self,
        token: &str,
        channel: &str,
        limit: u32,
        cursor: Option<(&str, &str)>,
        if_none_match: Option<&str>,
        want_ids: bool,
    ) -> anyhow::Result<Page> {
        let mut url = self.url(&format!(
            "/api/v1/channels/{channel}/messages?limit={limit}"
        ));
        if let Some((name, id)) = cursor {
            url.push_str(&format!("&{name}={id}"));
        }
        let mut req = self.http.get(url).bearer_auth(token);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let etag = res
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res.bytes().await?;
        let ids = if want_ids && status == 200 {
            let page: MessagePage =
                serde_json::from_slice(&body).context("a 200 page that is not a message page")?;
            Some(page.messages.into_iter().map(|m| m.id).collect())
        } else {
            None
        };
        Ok(Page {
            outcome: Outcome { status },
            etag,
            ids,
        })
    }

    /// The body size of a channel's latest page (50 messages).
    pub(crate) async fn page_bytes(&self, token: &str, channel: &str) -> anyhow::Result<usize> {
        let res = self
            .http
            .get(self.url(&format!("/api/v1/channels/{channel}/messages?limit=50")))
            .bearer_auth(token)
            .send()
            .await?;
        let res = expect(res, StatusCode::OK, "latest page").await?;
        Ok(res.bytes().await?.len())
    }

    /// chat-api's counters, read through the types it writes them with (of the first instance).
    pub(crate) async fn stats(&self) -> anyhow::Result<chat_stats::Stats> {
        self.stats_of(0).await
    }

    /// The counters of instance `i` (see [`Client::instances`]).
    pub(crate) async fn stats_of(&self, i: usize) -> anyhow::Result<chat_stats::Stats> {
        let res = self
            .http
            .get(format!("{}{}", self.bases[i], chat_stats::PATH))
            .send()
            .await?;
        let res = expect(res, StatusCode::OK, "stats").await?;
        Ok(chat_stats::parse(&res.bytes().await?)?)
    }

    pub(crate) async fn my_channels(&self, token: &str) -> anyhow::Result<Outcome> {
        let res = self
            .http
            .get(self.url("/api/v1/users/me/channels"))
            .bearer_auth(token)
            .send()
            .await?;
        let status = res.status().as_u16();
        let _ = res.bytes().await?;
        Ok(Outcome { status })
    }
}

async fn expect(
    res: reqwest::Response,
    want: StatusCode,
    what: &str,
) -> anyhow::Result<reqwest::Response> {
    if res.status() == want {
        return Ok(res);
    }
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    bail!("{what}: expected {want}, got {status}: {body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_instances_take_turns() {
        let client = Client::new("http://a:1, http://b:2/").unwrap();
        assert_eq!(client.instances(), 2);
        let urls: Vec<String> = (0..4).map(|_| client.url("/x")).collect();
        assert_eq!(
            urls,
            [
                "http://a:1/x",
                "http://b:2/x",
                "http://a:1/x",
                "http://b:2/x"
            ]
        );
        assert_eq!(Client::new("http://a/").unwrap().url("/x"), "http://a/x");
        assert!(Client::new(" , ").is_err());
    }
}
