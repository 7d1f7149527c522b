//! The seeded dataset: users, channels with Zipf popularity, memberships and messages, created
//! through the API and saved as JSON so the workload knows the tokens and ids.

use std::{collections::BTreeSet, path::PathBuf, sync::Arc};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::api::Client;

/// `chat-bench seed`.
#[derive(Debug, clap::Args)]
pub(crate) struct SeedArgs {
    /// Users to register.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Channels to create.
    #[arg(long, default_value_t = 200)]
    channels: usize,
    /// Channels each user joins (popular channels are joined more often).
    #[arg(long, default_value_t = 20)]
    per_user: usize,
    /// Messages to post.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Zipf exponent of channel popularity.
    #[arg(long, default_value_t = 1.1)]
    zipf: f64,
    /// Requests in flight while seeding.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Where to write the dataset.
    #[arg(long, default_value = "target/bench/dataset.json")]
    out: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Dataset {
    pub(crate) users: Vec<User>,
    pub(crate) channels: Vec<Channel>,
    pub(crate) zipf: f64,
    pub(crate) messages: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) token: String,
    /// Indexes into `Dataset::channels`, most popular first.
    pub(crate) channels: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Channel {
    pub(crate) id: String,
    /// Indexes into `Dataset::users`.
    pub(crate) members: Vec<usize>,
    /// A sample of message ids (cursors for older pages).
    pub(crate) sample_messages: Vec<String>,
}

impl Dataset {
    pub(crate) fn load(path: &PathBuf) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Samples ranks `0..n` with probability ∝ 1/(rank+1)^s.
#[derive(Debug, Clone)]
pub(crate) struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    pub(crate) fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let total = *self.cumulative.last().expect("at least one rank");
        let x = rng.f64() * total;
        self.cumulative
            .partition_point(|c| *c < x)
            .min(self.cumulative.len() - 1)
    }
}

const WORDS: &[&str] = &[
    "hello", "ship", "it", "review", "the", "deploy", "cache", "redis", "lunch", "tomorrow",
    "thanks", "on", "my", "way", "👍", "bug", "fixed", "meeting", "later", "why", "not", "today",
];

pub(crate) fn content(rng: &mut fastrand::Rng) -> String {
    let target = rng.usize(20..300);
    let mut out = String::new();
    while out.len() < target {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(WORDS[rng.usize(..WORDS.len())]);
    }
    out
}

fn bar(len: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

pub(crate) async fn seed(client: &Client, args: &SeedArgs, quiet: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.users > 0 && args.channels > 0,
        "need users and channels"
    );
    let mut rng = fastrand::Rng::with_seed(42);
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));

    // Users.
    let progress = bar(args.users, "users", quiet);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.users {
        let (client, limit) = (client.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            client.register(&format!("user{i}")).await.map(|u| (i, u))
        });
    }
    let mut users = vec![None; args.users];
    while let Some(done) = tasks.join_next().await {
        let (i, (id, token)) = done??;
        users[i] = Some(User {
            id,
            token,
            channels: Vec::new(),
        });
        progress.inc(1);
    }
    progress.finish();
    let mut users: Vec<User> = users.into_iter().map(|u| u.expect("registered")).collect();

    // Channels, each created by one user (who becomes its first member).
    let progress = bar(args.channels, "channels", quiet);
    let mut channels = Vec::with_capacity(args.channels);
    for j in 0..args.channels {
        let creator = j % users.len();
        let id = client
            .create_channel(&users[creator].token, &format!("channel-{j}"))
            .await?;
        channels.push(Channel {
            id,
            members: vec![creator],
            sample_messages: Vec::new(),
        });
        users[creator].channels.push(j);
        progress.inc(1);
    }
    progress.finish();

    // Memberships: each user joins channels drawn by popularity.
    let zipf = Zipf::new(args.channels, args.zipf);
    let mut joins = Vec::new();
    for (u, user) in users.iter_mut().enumerate() {
        let mut mine: BTreeSet<usize> = user.channels.iter().copied().collect();
        let want = args.per_user.min(args.channels);
        let mut attempts = 0;
        while mine.len() < want && attempts < want * 50 {
            attempts += 1;
            let c = zipf.sample(&mut rng);
            if mine.insert(c) {
                joins.push((u, c));
            }
        }
        user.channels = mine.into_iter().collect();
    }
    let progress = bar(joins.len(), "joins", quiet);
    let mut tasks = tokio::task::JoinSet::new();
    for &(u, c) in &joins {
        let (client, limit) = (client.clone(), limit.clone());
        let (token, channel) = (users[u].token.clone(), channels[c].id.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            client.join(&token, &channel).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
        progress.inc(1);
    }
    progress.finish();
    for (u, c) in joins {
        channels[c].members.push(u);
    }

    // Messages, by channel popularity, from random members.
    let progress = bar(args.messages, "messages", quiet);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.messages {
        let c = zipf.sample(&mut rng);
        let author = channels[c].members[rng.usize(..channels[c].members.len())];
        let (client, limit) = (client.clone(), limit.clone());
        let (token, channel, text) = (
            users[author].token.clone(),
            channels[c].id.clone(),
            content(&mut rng),
        );
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            client.post(&token, &channel, &text).await.map(|r| (c, r))
        });
        // Keep memory bounded: drain finished posts as we go.
        while tasks.len() > args.concurrency * 4 {
            if let Some(done) = tasks.join_next().await {
                record_post(&mut channels, done??)?;
                progress.inc(1);
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        record_post(&mut channels, done??)?;
        progress.inc(1);
    }
    progress.finish();

    let dataset = Dataset {
        users,
        channels,
        zipf: args.zipf,
        messages: args.messages,
    };
    crate::write_json(&args.out, &dataset)?;
    eprintln!(
        "seeded {} users, {} channels, {} messages into {}",
        args.users,
        args.channels,
        args.messages,
        args.out.display()
    );
    Ok(())
}

fn record_post(
    channels: &mut [Channel],
    (c, (outcome, id)): (usize, (crate::api::Outcome, Option<String>)),
) -> anyhow::Result<()> {
    anyhow::ensure!(!outcome.is_error(), "post failed with {}", outcome.status);
    let sample = &mut channels[c].sample_messages;
    if let Some(id) = id {
        if sample.len() < 64 {
            sample.push(id);
        } else {
            let i = fastrand::usize(..sample.len() * 4);
            if i < sample.len() {
                sample[i] = id;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_prefers_low_ranks_and_covers_all() {
        let zipf = Zipf::new(200, 1.1);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut counts = vec![0u32; 200];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[150]);
        assert!(counts[0] > 100_000 / 10, "rank 0 is a hot channel");
    }
}
