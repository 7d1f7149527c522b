//! `chat-bench cluster`: the multi-instance check. Given the URLs of several chat-api instances
//! on one database and one Upstash, it proves they behave as one server:
//!
//! - **steady**: posts made round-robin on every instance reach every WebSocket session on every
//!   instance exactly once, in order per channel; every latest-page read that starts at least 1 s
//!   after a post was acknowledged (on any instance) contains it; and the cross-instance
//!   staleness (post acknowledged → first read on another instance that shows it) is measured.
//! - **chaos** (`--chaos`): the harness on the other end of stdin/stdout kills an instance
//!   (`SIGKILL`) and restarts it, then kills the Upstash gateway and restarts it. Reads on the
//!   instances that stay up must never fail, and after each recovery everything converges within
//!   `--converge-within`: a read of every channel on every instance shows every acknowledged post,
//!   and every session has every post (as an event, or on the page it refetched after a 4008
//!   "resync" close or a reconnect).
//!
//! The chaos protocol is one line each way: chat-bench prints `chat-bench-control: <action>` on
//! stdout (`kill-instance I`, `restart-instance I`, `kill-gateway`, `restart-gateway`) and waits
//! for `ok` on stdin, which the harness sends once the action is done (a restarted process is
//! ready). Anything else on stdin aborts the run.
//!
//! Posts carry their identity in their content (`cl/<run>/<channel>/<index>`), so an event or a
//! page read can be matched to the post it shows even before the post's answer arrived.

mod ws;

use std::{
    collections::HashSet,
    io::Write,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::parse_duration;

/// What chat-bench prints before a chaos action on stdout.
pub(crate) const CONTROL_PREFIX: &str = "chat-bench-control: ";
/// How old an acknowledged post must be before every read has to show it.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);
/// The page size of the checked reads (chat-api's default latest page).
const PAGE: usize = 50;

#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// Base URL of one chat-api instance; give it once per instance (at least two). The same URL
    /// may repeat (a load balancer in front of the instances).
    #[arg(long = "instance", required = true)]
    instances: Vec<String>,
    /// Users; each has a WebSocket session on every instance and is a member of every channel.
    #[arg(long, default_value_t = 4)]
    users: usize,
    /// Channels, posted to in parallel (posts to one channel are sequential).
    #[arg(long, default_value_t = 2)]
    channels: usize,
    /// Posts per channel in the steady phase.
    #[arg(long, default_value_t = 30)]
    posts: u64,
    /// Pause between two posts to one channel.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pace: Duration,
    /// Pause between two latest-page reads of one channel on one instance.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    poll: Duration,
    /// Run the chaos schedule after the steady phase (needs a harness on stdin/stdout).
    #[arg(long)]
    chaos: bool,
    /// Which instance (0-based) the chaos schedule kills; default the last.
    #[arg(long)]
    kill: Option<usize>,
    /// How long each outage lasts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    outage: Duration,
    /// How soon after a recovery (or the end of the steady posts) everything must converge.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    converge_within: Duration,
    /// A label for the report (for example `direct` or `nginx`).
    #[arg(long, default_value = "direct")]
    label: String,
    /// Also write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct Instance {
    url: String,
    ws_url: String,
    http: reqwest::Client,
    /// False while the harness has the instance down (reads of it may fail then).
    up: AtomicBool,
    /// Counts the times the instance was taken down, so a staleness sample never spans an outage
    /// of the instance it was read on.
    outages: AtomicU64,
}

/// A latest page as the checks need it.
#[derive(Debug)]
struct PageRead {
    ids: Vec<String>,
    contents: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct PageBody {
    messages: Vec<PageMessage>,
}

#[derive(Debug, Deserialize)]
struct PageMessage {
    id: String,
    content: String,
}

impl Instance {
    fn new(url: &str) -> anyhow::Result<Self> {
        let url = url.trim_end_matches('/').to_owned();
        let ws_url = if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            bail!("instance URL {url:?} is not http:// or https://")
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Instance {
            url,
            ws_url,
            http,
            up: AtomicBool::new(true),
            outages: AtomicU64::new(0),
        })
    }

    async fn read_page(
        &self,
        token: &str,
        channel: &str,
        limit: usize,
    ) -> anyhow::Result<PageRead> {
        let res = self
            .http
            .get(format!(
                "{}/api/v1/channels/{channel}/messages?limit={limit}",
                self.url
            ))
            .bearer_auth(token)
            .send()
            .await?;
        let status = res.status();
        let body = res.bytes().await?;
        if status != StatusCode::OK {
            bail!("latest page: {status}");
        }
        let page: PageBody = serde_json::from_slice(&body).context("a 200 that is not a page")?;
        let (ids, contents) = page.messages.into_iter().map(|m| (m.id, m.content)).unzip();
        Ok(PageRead { ids, contents })
    }

    async fn post(&self, token: &str, channel: &str, content: &str) -> anyhow::Result<String> {
        let res = self
            .http
            .post(format!("{}/api/v1/channels/{channel}/messages", self.url))
            .bearer_auth(token)
            .json(&json!({ "content": content }))
            .send()
            .await?;
        let status = res.status();
        if status != StatusCode::CREATED {
            bail!("post: {status}");
        }
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        Ok(res.json::<Id>().await?.id)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}

#[derive(Debug)]
pub(crate) struct User {
    token: String,
}

#[derive(Debug)]
pub(crate) struct ChannelInfo {
    id: String,
}

/// A post of this run: its channel (index) and its place in that channel's sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PostRef {
    pub(crate) channel: usize,
    pub(crate) index: u64,
}

/// An acknowledged post.
#[derive(Debug, Clone)]
struct Ack {
    post: PostRef,
    id: String,
    instance: usize,
    sent: Instant,
    at: Instant,
    window: usize,
    /// Each instance's outage count when the post was acknowledged, or `None` for one that was
    /// down: staleness is only sampled on instances that stayed up since.
    outages: Vec<Option<u64>>,
}

/// The counters of one window of the schedule (steady, or one outage and its recovery).
#[derive(Debug, Default, Serialize)]
struct Window {
    name: String,
    /// Whether a read ≥ 1 s after an ack that misses it fails the run in this window.
    strict: bool,
    posts_acked: u64,
    post_failures: u64,
    reads: u64,
    /// Reads that failed on an instance that was up.
    failed_reads: u64,
    /// Reads of an instance while it was down (not checked).
    down_reads: u64,
    /// Reads that missed a post acknowledged ≥ 1 s before they started.
    late_reads: u64,
    examples: Vec<String>,
    #[serde(skip)]
    staleness: Vec<Duration>,
    #[serde(skip)]
    fanout: Vec<Duration>,
    staleness_ms: Option<Percentiles>,
    fanout_ms: Option<Percentiles>,
    resyncs: u64,
    drops: u64,
    /// From recovery (or the last steady post) until everything converged.
    converged_ms: Option<u64>,
    convergence_error: Option<String>,
    /// After convergence: until one post on every instance reached every session as an event.
    probe_ms: Option<u64>,
    probe_error: Option<String>,
}

#[derive(Debug, Serialize, Clone, Copy)]
struct Percentiles {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a rank within a short vector"
            )]
            let i = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Some(Percentiles {
            n: ms.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: ms[ms.len() - 1],
        })
    }

    fn show(p: Option<Self>) -> String {
        p.map_or_else(
            || "–".to_owned(),
            |p| format!("{:.0}/{:.0}/{:.0}", p.p50, p.p99, p.max),
        )
    }
}

const EXAMPLES: usize = 5;

impl Window {
    fn example(&mut self, text: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(text);
        }
    }
}

/// Everything the tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    run: String,
    instances: Vec<Instance>,
    users: Vec<User>,
    channels: Vec<ChannelInfo>,
    acks: Mutex<Vec<Ack>>,
    /// (instance, post) pairs already seen on a read, for the staleness samples.
    seen: Mutex<HashSet<(usize, PostRef)>>,
    windows: Mutex<Vec<Window>>,
    current: AtomicUsize,
    next_index: Vec<AtomicU64>,
    next_instance: AtomicUsize,
    /// Every `--instance` is the same URL (a load balancer): which instance served a post, a read
    /// or a session is unknown, so every read and session counts as "another instance".
    one_url: bool,
    /// When the run started: the origin of the times in examples and the timeline.
    t0: Instant,
    /// The chaos actions and recoveries, with their times.
    timeline: Mutex<Vec<String>>,
}

impl Shared {
    /// `at` as seconds since the run started.
    fn t(&self, at: Instant) -> String {
        format!(
            "t={:.2}s",
            at.saturating_duration_since(self.t0).as_secs_f64()
        )
    }

    fn mark(&self, what: &str) {
        let line = format!("{} {what}", self.t(Instant::now()));
        self.timeline.lock().expect("timeline").push(line);
    }

    /// The post a content of this run stands for.
    pub(crate) fn parse_content(&self, content: &str) -> Option<PostRef> {
        let rest = content
            .strip_prefix("cl/")?
            .strip_prefix(self.run.as_str())?;
        let mut parts = rest.strip_prefix('/')?.split('/');
        let channel = parts.next()?.parse().ok()?;
        let index = parts.next()?.parse().ok()?;
        Some(PostRef { channel, index })
    }

    fn content(&self, post: &PostRef) -> String {
        format!("cl/{}/{}/{}", self.run, post.channel, post.index)
    }

    fn window<R>(&self, f: impl FnOnce(&mut Window) -> R) -> R {
        let mut windows = self.windows.lock().expect("windows");
        let i = self.current.load(Ordering::SeqCst);
        f(&mut windows[i])
    }

    fn begin(&self, name: String, strict: bool) -> usize {
        let mut windows = self.windows.lock().expect("windows");
        windows.push(Window {
            name,
            strict,
            ..Window::default()
        });
        let i = windows.len() - 1;
        self.current.store(i, Ordering::SeqCst);
        i
    }

    fn acks_of(&self, channel: usize) -> Vec<Ack> {
        self.acks
            .lock()
            .expect("acks")
            .iter()
            .filter(|a| a.post.channel == channel)
            .cloned()
            .collect()
    }

    fn outages_now(&self) -> Vec<Option<u64>> {
        self.instances
            .iter()
            .map(|i| {
                let outages = i.outages.load(Ordering::SeqCst);
                i.up.load(Ordering::SeqCst).then_some(outages)
            })
            .collect()
    }

    fn up_instances(&self) -> Vec<usize> {
        (0..self.instances.len())
            .filter(|&i| self.instances[i].up.load(Ordering::SeqCst))
            .collect()
    }
}

/// Whether `page` (newest first) shows the post `id`: it is on it, or the page is full of newer
/// posts (ULIDs sort by time, so a post older than a full page is simply off the page).
fn shows(page: &PageRead, ids: &HashSet<&str>, id: &str) -> bool {
    ids.contains(id)
        || (page.ids.len() >= PAGE && page.ids.last().is_some_and(|oldest| id < oldest.as_str()))
}

pub(crate) async fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.instances.len() >= 2,
        "give at least two --instance URLs"
    );
    anyhow::ensure!(
        args.users >= 1 && args.channels >= 1,
        "--users and --channels must be ≥ 1"
    );
    let kill = args.kill.unwrap_or(args.instances.len() - 1);
    anyhow::ensure!(
        kill < args.instances.len(),
        "--kill {kill}: no such instance"
    );
    let instances = args
        .instances
        .iter()
        .map(|u| Instance::new(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let one_url = args.instances.iter().all(|u| *u == args.instances[0]);
    let run = format!("{:08x}", fastrand::u32(..));
    eprintln!(
        "cluster[{}]: run {run}, {} instances, {} users, {} channels",
        args.label,
        instances.len(),
        args.users,
        args.channels
    );
    let (users, channels) = setup(&instances, &run, args.users, args.channels).await?;
    let shared = Arc::new(Shared {
        run,
        instances,
        users,
        channels,
        acks: Mutex::new(Vec::new()),
        seen: Mutex::new(HashSet::new()),
        windows: Mutex::new(Vec::new()),
        current: AtomicUsize::new(0),
        next_index: (0..args.channels).map(|_| AtomicU64::new(1)).collect(),
        next_instance: AtomicUsize::new(0),
        one_url,
        t0: Instant::now(),
        timeline: Mutex::new(Vec::new()),
    });
    shared.begin("steady".into(), true);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sessions = Vec::new();
    let mut tasks = Vec::new();
    for user in 0..shared.users.len() {
        for instance in 0..shared.instances.len() {
            let session = Arc::new(ws::Session {
                user,
                instance,
                log: Mutex::new(ws::SessionLog::default()),
            });
            sessions.push(Arc::clone(&session));
            tasks.push(tokio::spawn(ws::run(
                Arc::clone(&shared),
                session,
                stop_rx.clone(),
            )));
        }
    }
    wait_ready(&sessions, Duration::from_secs(30)).await?;
    eprintln!(
        "cluster[{}]: {} WebSocket sessions ready",
        args.label,
        sessions.len()
    );
    for instance in 0..shared.instances.len() {
        for channel in 0..shared.channels.len() {
            tasks.push(tokio::spawn(reader(
                Arc::clone(&shared),
                instance,
                channel,
                args.poll,
                stop_rx.clone(),
            )));
        }
    }

    // Steady: a fixed number of posts per channel, round-robin over the instances.
    let (posters_stop, posters) = start_posters(&shared, args, Some(args.posts));
    for p in posters {
        let _ = p.await;
    }
    drop(posters_stop);
    shared.mark("steady posts done");
    converge_into(&shared, &sessions, Instant::now(), args.converge_within).await;
    let mut counters = close_counters(&shared, &sessions, (0, 0));

    if args.chaos {
        let instance = Outage {
            window: format!("kill -9 instance {kill}, restart"),
            down: format!("kill-instance {kill}"),
            up: format!("restart-instance {kill}"),
            instance: Some(kill),
        };
        counters = outage_window(&shared, &sessions, args, instance, counters).await?;
        let gateway = Outage {
            window: "kill -9 gateway, restart".into(),
            down: "kill-gateway".into(),
            up: "restart-gateway".into(),
            instance: None,
        };
        outage_window(&shared, &sessions, args, gateway, counters).await?;
    }

    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    fanout(&shared, &sessions);
    let servers = server_lines(&shared).await;
    report(&shared, &sessions, args, &servers)
}

/// Registers the users and channels of this run; every user joins every channel.
async fn setup(
    instances: &[Instance],
    run: &str,
    users: usize,
    channels: usize,
) -> anyhow::Result<(Vec<User>, Vec<ChannelInfo>)> {
    let mut registered = Vec::new();
    for u in 0..users {
        let via = &instances[u % instances.len()];
        let body = via
            .call(
                reqwest::Method::POST,
                "/api/v1/users",
                None,
                Some(json!({ "name": format!("cl{run}u{u}") })),
            )
            .await
            .context("registering a user")?;
        let token = body
            .get("token")
            .and_then(|t| t.as_str())
            .context("no token")?
            .to_owned();
        registered.push(User { token });
    }
    let mut created = Vec::new();
    for c in 0..channels {
        let via = &instances[c % instances.len()];
        let body = via
            .call(
                reqwest::Method::POST,
                "/api/v1/channels",
                Some(&registered[0].token),
                Some(json!({ "name": format!("cl{run}c{c}"), "kind": "public" })),
            )
            .await
            .context("creating a channel")?;
        let id = body
            .get("id")
            .and_then(|t| t.as_str())
            .context("no channel id")?
            .to_owned();
        for (u, user) in registered.iter().enumerate().skip(1) {
            instances[(u + c) % instances.len()]
                .call(
                    reqwest::Method::PUT,
                    &format!("/api/v1/channels/{id}/members/me"),
                    Some(&user.token),
                    None,
                )
                .await
                .context("joining a channel")?;
        }
        created.push(ChannelInfo { id });
    }
    Ok((registered, created))
}

async fn wait_ready(sessions: &[Arc<ws::Session>], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let waiting = sessions
            .iter()
            .filter(|s| !s.log.lock().expect("log").ready)
            .count();
        if waiting == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{waiting} of {} WebSocket sessions did not become ready in {within:?}",
                sessions.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one channel's latest page on one instance every `poll`, checking each read.
async fn reader(
    shared: Arc<Shared>,
    instance: usize,
    channel: usize,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let token = shared.users[channel % shared.users.len()].token.clone();
    loop {
        if *stop.borrow() {
            return;
        }
        if shared.instances[instance].up.load(Ordering::SeqCst) {
            check_read(&shared, instance, channel, &token).await;
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn check_read(shared: &Shared, instance: usize, channel: usize, token: &str) {
    let acks = shared.acks_of(channel);
    let started = Instant::now();
    let read = shared.instances[instance]
        .read_page(token, &shared.channels[channel].id, PAGE)
        .await;
    let page = match read {
        Ok(page) => page,
        Err(err) => {
            let up = shared.instances[instance].up.load(Ordering::SeqCst);
            shared.window(|w| {
                w.reads += 1;
                if up {
                    w.failed_reads += 1;
                    w.example(format!("instance {instance}: read failed: {err:#}"));
                } else {
                    w.down_reads += 1;
                }
            });
            return;
        }
    };
    let ids: HashSet<&str> = page.ids.iter().map(String::as_str).collect();
    let mut late = None;
    let mut newly_seen = Vec::new();
    {
        let mut seen = shared.seen.lock().expect("seen");
        for ack in &acks {
            let visible = shows(&page, &ids, &ack.id);
            if visible {
                let stayed_up = ack.outages[instance]
                    == Some(shared.instances[instance].outages.load(Ordering::SeqCst));
                if (ack.instance != instance || shared.one_url)
                    && stayed_up
                    && seen.insert((instance, ack.post.clone()))
                {
                    newly_seen.push((ack.window, started.saturating_duration_since(ack.at)));
                }
            } else if started.saturating_duration_since(ack.at) >= VISIBLE_WITHIN && late.is_none()
            {
                late = Some((
                    format!(
                        "instance {instance}: channel {channel} post #{} ",
                        ack.post.index
                    ),
                    format!(
                        "(acked on instance {} at {}) missing from a read sent at {}",
                        ack.instance,
                        shared.t(ack.at),
                        shared.t(started)
                    ),
                ));
            }
        }
    }
    let mut windows = shared.windows.lock().expect("windows");
    for (window, staleness) in newly_seen {
        windows[window].staleness.push(staleness);
    }
    let w = &mut windows[shared.current.load(Ordering::SeqCst)];
    w.reads += 1;
    if let Some((what, detail)) = late {
        w.late_reads += 1;
        // One example per post and instance: the first read that missed it.
        if !w.examples.iter().any(|e| e.starts_with(&what)) {
            w.example(format!("{what}{detail}"));
        }
    }
}

/// One chaos window: what the harness takes down and brings back up.
struct Outage {
    window: String,
    down: String,
    up: String,
    // The chat-api instance taken down, if it is one (its reads do not count meanwhile).
    instance: Option<usize>,
}

/// Posts throughout `outage`; after the recovery, everything must converge and a post on every
/// instance must reach every session as an event. Returns the session counters at its end.
async fn outage_window(
    shared: &Arc<Shared>,
    sessions: &[Arc<ws::Session>],
    args: &ClusterArgs,
    outage: Outage,
    counters: (u64, u64),
) -> anyhow::Result<(u64, u64)> {
    shared.begin(outage.window, false);
    let (posters_stop, posters) = start_posters(shared, args, None);
    if let Some(i) = outage.instance {
        shared.instances[i].up.store(false, Ordering::SeqCst);
        shared.instances[i].outages.fetch_add(1, Ordering::SeqCst);
    }
    control(shared, &outage.down).await?;
    tokio::time::sleep(args.outage).await;
    control(shared, &outage.up).await?;
    if let Some(i) = outage.instance {
        shared.instances[i].up.store(true, Ordering::SeqCst);
    }
    let recovered = Instant::now();
    // New posts after the recovery must reach every session too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = posters_stop.send(true);
    for p in posters {
        let _ = p.await;
    }
    converge_into(shared, sessions, recovered, args.converge_within).await;
    probe_into(shared, sessions, args.converge_within).await;
    Ok(close_counters(shared, sessions, counters))
}

/// One poster per channel: `count` posts (or until stopped), each to the next instance that is
/// up, by the next user.
fn start_posters(
    shared: &Arc<Shared>,
    args: &ClusterArgs,
    count: Option<u64>,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let handles = (0..shared.channels.len())
        .map(|channel| {
            let shared = Arc::clone(shared);
            let mut stop = stop_rx.clone();
            let pace = args.pace;
            tokio::spawn(async move {
                let mut made = 0;
                while count.is_none_or(|n| made < n) && !*stop.borrow() {
                    made += 1;
                    post_once(&shared, channel).await;
                    tokio::select! {
                        () = tokio::time::sleep(pace) => {}
                        _ = stop.changed() => {}
                    }
                }
            })
        })
        .collect();
    (stop_tx, handles)
}

async fn post_once(shared: &Shared, channel: usize) {
    let up = shared.up_instances();
    if up.is_empty() {
        return;
    }
    let turn = shared.next_instance.fetch_add(1, Ordering::SeqCst);
    post_to(
        shared,
        channel,
        up[turn % up.len()],
        turn % shared.users.len(),
    )
    .await;
}

/// Posts the next post of `channel` to `instance` as `user`; records it if acknowledged.
async fn post_to(shared: &Shared, channel: usize, instance: usize, user: usize) -> Option<PostRef> {
    let post = PostRef {
        channel,
        index: shared.next_index[channel].fetch_add(1, Ordering::SeqCst),
    };
    let sent = Instant::now();
    let outcome = shared.instances[instance]
        .post(
            &shared.users[user].token,
            &shared.channels[channel].id,
            &shared.content(&post),
        )
        .await;
    let at = Instant::now();
    match outcome {
        Ok(id) => {
            let window = shared.current.load(Ordering::SeqCst);
            shared.acks.lock().expect("acks").push(Ack {
                post: post.clone(),
                id,
                instance,
                sent,
                at,
                window,
                outages: shared.outages_now(),
            });
            shared.window(|w| w.posts_acked += 1);
            Some(post)
        }
        Err(err) => {
            shared.window(|w| {
                w.post_failures += 1;
                w.example(format!("instance {instance}: post failed: {err:#}"));
            });
            None
        }
    }
}

/// After a recovery has converged: one post on every instance must reach every session as an
/// event (not only on a refetched page), so realtime delivery itself is back everywhere.
async fn probe_into(shared: &Shared, sessions: &[Arc<ws::Session>], within: Duration) {
    let started = Instant::now();
    // Sessions closed by the outage must be back first: a probe that reaches a session only on
    // the page it refetches proves nothing about events.
    if let Err(err) = wait_ready(sessions, within).await {
        shared.window(|w| w.probe_error = Some(format!("{err:#}")));
        return;
    }
    let mut probes = Vec::new();
    for instance in 0..shared.instances.len() {
        match post_to(shared, 0, instance, instance % shared.users.len()).await {
            Some(post) => probes.push(post),
            None => {
                shared.window(|w| {
                    w.probe_error = Some(format!("the probe post on instance {instance} failed"))
                });
                return;
            }
        }
    }
    let deadline = started + within;
    loop {
        let waiting: Vec<String> = sessions
            .iter()
            .filter_map(|session| {
                let log = session.log.lock().expect("log");
                let missing = probes
                    .iter()
                    .filter(|p| !log.delivered.contains_key(p))
                    .count();
                (missing > 0).then(|| {
                    format!(
                        "session of user {} on instance {} missed {missing} of {} probe events",
                        session.user,
                        session.instance,
                        probes.len()
                    )
                })
            })
            .collect();
        if waiting.is_empty() {
            let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            shared.window(|w| w.probe_ms = Some(took));
            return;
        }
        if Instant::now() > deadline {
            let more = waiting.len().saturating_sub(2);
            let mut text = waiting[..waiting.len().min(2)].join("; ");
            if more > 0 {
                text.push_str(&format!("; and {more} more"));
            }
            shared.window(|w| w.probe_error = Some(text));
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every channel's page on every instance shows every acknowledged post and every
/// session has every post; records how long that took since `since` in the current window.
async fn converge_into(
    shared: &Shared,
    sessions: &[Arc<ws::Session>],
    since: Instant,
    within: Duration,
) {
    let deadline = since + within;
    let outcome = loop {
        let problem = convergence_problem(shared, sessions).await;
        match problem {
            None => break Ok(since.elapsed()),
            Some(problem) if Instant::now() > deadline => break Err(problem),
            Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    shared.mark(&match &outcome {
        Ok(took) => format!(
            "converged ({} ms after {})",
            took.as_millis(),
            shared.t(since)
        ),
        Err(_) => format!(
            "not converged {} ms after {}",
            within.as_millis(),
            shared.t(since)
        ),
    });
    shared.window(|w| match outcome {
        Ok(took) => w.converged_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX)),
        Err(problem) => w.convergence_error = Some(problem),
    });
}

/// What is not converged yet, if anything.
async fn convergence_problem(shared: &Shared, sessions: &[Arc<ws::Session>]) -> Option<String> {
    let acks = shared.acks.lock().expect("acks").clone();
    // Sessions are held to this window's posts (the final check covers every post); reads to
    // every post, since a page shows them all.
    let window = shared.current.load(Ordering::SeqCst);
    let mut problems = Vec::new();
    for session in sessions {
        let log = session.log.lock().expect("log");
        let missing = acks
            .iter()
            .filter(|a| a.window == window && log.has(&a.post).is_none())
            .count();
        if missing > 0 {
            problems.push(format!(
                "session of user {} on instance {} misses {missing} post(s){}",
                session.user,
                session.instance,
                if log.ready {
                    ""
                } else {
                    " and is not connected"
                }
            ));
        }
    }
    for instance in 0..shared.instances.len() {
        for (channel, info) in shared.channels.iter().enumerate() {
            let token = &shared.users[channel % shared.users.len()].token;
            match shared.instances[instance]
                .read_page(token, &info.id, PAGE)
                .await
            {
                Ok(page) => {
                    let ids: HashSet<&str> = page.ids.iter().map(String::as_str).collect();
                    let missing: Vec<String> = acks
                        .iter()
                        .filter(|a| a.post.channel == channel && !shows(&page, &ids, &a.id))
                        .map(|a| {
                            format!(
                                "#{} (acked on instance {} at {})",
                                a.post.index,
                                a.instance,
                                shared.t(a.at)
                            )
                        })
                        .collect();
                    if !missing.is_empty() {
                        problems.push(format!(
                            "instance {instance}: channel {channel}'s page misses {} post(s): {}",
                            missing.len(),
                            missing[..missing.len().min(3)].join(", ")
                        ));
                    }
                }
                Err(err) => problems.push(format!("instance {instance}: read failed: {err:#}")),
            }
        }
    }
    if problems.is_empty() {
        return None;
    }
    let more = problems.len().saturating_sub(3);
    problems.truncate(3);
    let mut text = problems.join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    Some(text)
}

/// Resyncs and drops of all sessions so far.
fn session_counters(sessions: &[Arc<ws::Session>]) -> (u64, u64) {
    sessions.iter().fold((0, 0), |(r, d), s| {
        let log = s.log.lock().expect("log");
        (r + log.resyncs, d + log.drops)
    })
}

/// Books the resyncs and drops since `before` to the current window; returns the new totals.
fn close_counters(
    shared: &Shared,
    sessions: &[Arc<ws::Session>],
    before: (u64, u64),
) -> (u64, u64) {
    let now = session_counters(sessions);
    shared.window(|w| {
        w.resyncs += now.0 - before.0;
        w.drops += now.1 - before.1;
    });
    now
}

/// Post sent → event on a session of another instance, per window of the post.
fn fanout(shared: &Shared, sessions: &[Arc<ws::Session>]) {
    let acks = shared.acks.lock().expect("acks").clone();
    let mut windows = shared.windows.lock().expect("windows");
    for session in sessions {
        let log = session.log.lock().expect("log");
        for ack in acks
            .iter()
            .filter(|a| a.instance != session.instance || shared.one_url)
        {
            if let Some((_, at)) = log.delivered.get(&ack.post) {
                windows[ack.window]
                    .fanout
                    .push(at.saturating_duration_since(ack.sent));
            }
        }
    }
    for w in windows.iter_mut() {
        w.staleness_ms = Percentiles::of(&w.staleness);
        w.fanout_ms = Percentiles::of(&w.fanout);
    }
}

/// Each instance's own view at the end (backplane, breaker, pending invalidations): what a
/// failed check needs to be explained.
async fn server_lines(shared: &Shared) -> Vec<String> {
    let mut lines = Vec::new();
    let mut urls: Vec<&str> = shared.instances.iter().map(|i| i.url.as_str()).collect();
    urls.dedup();
    for (i, url) in urls.iter().enumerate() {
        let stats = async {
            let res = shared.instances[0]
                .http
                .get(format!("{url}{}", chat_stats::PATH))
                .send()
                .await?;
            anyhow::Ok(chat_stats::parse(&res.bytes().await?)?)
        }
        .await;
        lines.push(match stats {
            Ok(stats) => {
                let breaker = stats.cache.breaker.map_or_else(
                    || "–".to_owned(),
                    |b| format!("{} (opened {}×)", b.state.as_str(), b.opened),
                );
                let bus = stats.backplane.map_or_else(
                    || "no backplane".to_owned(),
                    |b| {
                        format!(
                            "backplane {}: published {}, received {}, gaps {}, interruptions {}, resets {}, events sent {} / received {}, ws resyncs {}",
                            b.state.as_str(),
                            b.published,
                            b.received,
                            b.gaps,
                            b.interruptions,
                            b.resets,
                            b.events_sent,
                            b.events_received,
                            b.ws_resyncs
                        )
                    },
                );
                format!(
                    "instance {i}: breaker {breaker}, pending invalidations {}; {bus}",
                    stats.cache.pending_invalidations
                )
            }
            Err(err) => format!("instance {i}: /stats unreadable: {err:#}"),
        });
    }
    lines
}

/// Asks the harness for a chaos action and waits for its `ok`.
async fn control(shared: &Shared, action: &str) -> anyhow::Result<()> {
    eprintln!("cluster: chaos: {action}");
    shared.mark(&format!("{action}: asked"));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{CONTROL_PREFIX}{action}")?;
        out.flush()?;
    }
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    match line.trim() {
        "ok" => {
            shared.mark(&format!("{action}: done"));
            Ok(())
        }
        "" => bail!(
            "chaos action {action:?}: no harness on stdin (run through `cargo xtask cluster`)"
        ),
        other => bail!("chaos action {action:?} failed: {other}"),
    }
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    label: &'a str,
    instances: usize,
    sessions: usize,
    windows: &'a [Window],
    duplicates: u64,
    out_of_order: u64,
    missing: u64,
    passed: bool,
}

fn report(
    shared: &Shared,
    sessions: &[Arc<ws::Session>],
    args: &ClusterArgs,
    servers: &[String],
) -> anyhow::Result<()> {
    let windows = shared.windows.lock().expect("windows");
    let acks = shared.acks.lock().expect("acks").clone();
    let mut duplicates = 0;
    let mut out_of_order = 0;
    let mut missing = 0;
    let mut examples = Vec::new();
    for session in sessions {
        let log = session.log.lock().expect("log");
        duplicates += log.duplicates();
        out_of_order += log.out_of_order.len() as u64;
        for what in log.out_of_order.iter().take(2) {
            examples.push(format!(
                "user {} on instance {}: {what}",
                session.user, session.instance
            ));
        }
        missing += acks.iter().filter(|a| log.has(&a.post).is_none()).count() as u64;
    }
    let mut out = String::new();
    out.push_str(&format!(
        "\ncluster check [{}]: {} instances, {} WebSocket sessions, {} channels; times in ms (p50/p99/max)\n\n",
        args.label,
        shared.instances.len(),
        sessions.len(),
        shared.channels.len()
    ));
    out.push_str(&format!(
        "{:<34} {:>6} {:>6} {:>6} {:>7} {:>6} {:>14} {:>14} {:>7} {:>6} {:>10}\n",
        "window",
        "posts",
        "p.err",
        "reads",
        "r.fail",
        "late",
        "staleness",
        "ws fan-out",
        "resync",
        "drops",
        "converged"
    ));
    for w in windows.iter() {
        out.push_str(&format!(
            "{:<34} {:>6} {:>6} {:>6} {:>7} {:>6} {:>14} {:>14} {:>7} {:>6} {:>10}\n",
            w.name,
            w.posts_acked,
            w.post_failures,
            w.reads,
            w.failed_reads,
            w.late_reads,
            Percentiles::show(w.staleness_ms),
            Percentiles::show(w.fanout_ms),
            w.resyncs,
            w.drops,
            w.converged_ms
                .map_or_else(|| "NO".to_owned(), |ms| format!("{ms} ms")),
        ));
    }
    out.push_str(&format!(
        "\n(late: reads that started ≥ 1 s after an acknowledged post and miss it; staleness: post acknowledged → first read on another instance that shows it, sampled every {} ms on instances that stayed up since the ack; ws fan-out: post sent → event on a session of another instance; p.err: posts that failed, on an instance being killed they may)\n\n",
        args.poll.as_millis()
    ));

    if shared.one_url {
        out.push_str(
            "(every --instance is one URL, a load balancer: staleness and fan-out count every read and session, not only other instances')\n\n",
        );
    }
    let mut checks: Vec<(String, Result<String, String>)> = Vec::new();
    for w in windows.iter() {
        checks.push((
            format!("{}: 0 failed reads on instances that were up", w.name),
            if w.failed_reads == 0 {
                Ok(format!("{} reads", w.reads))
            } else {
                Err(format!("{} failed", w.failed_reads))
            },
        ));
        if w.strict {
            checks.push((
                format!("{}: reads ≥ 1 s after an ack contain it", w.name),
                if w.late_reads == 0 {
                    Ok(format!("{} reads", w.reads))
                } else {
                    Err(format!("{} reads missed a post", w.late_reads))
                },
            ));
        }
        checks.push((
            format!(
                "{}: reads and sessions converge within {} s",
                w.name,
                args.converge_within.as_secs()
            ),
            match (&w.converged_ms, &w.convergence_error) {
                (Some(ms), _) => Ok(format!("{ms} ms")),
                (None, Some(problem)) => Err(problem.clone()),
                (None, None) => Err("not measured".into()),
            },
        ));
        if w.probe_ms.is_some() || w.probe_error.is_some() {
            checks.push((
                format!(
                    "{}: then a post on every instance reaches every session as an event",
                    w.name
                ),
                match (&w.probe_ms, &w.probe_error) {
                    (Some(ms), _) => Ok(format!("{ms} ms")),
                    (None, Some(problem)) => Err(problem.clone()),
                    (None, None) => Err("not measured".into()),
                },
            ));
        }
        if w.posts_acked == 0 {
            checks.push((
                format!("{}: posts were acknowledged", w.name),
                Err("none".into()),
            ));
        }
    }
    checks.push((
        "every message_create exactly once (no duplicates)".into(),
        if duplicates == 0 {
            Ok(String::new())
        } else {
            Err(format!("{duplicates} duplicate events"))
        },
    ));
    checks.push((
        "no acknowledged post missing from any session".into(),
        if missing == 0 {
            Ok(format!(
                "{} posts × {} sessions",
                acks.len(),
                sessions.len()
            ))
        } else {
            Err(format!("{missing} (post, session) pairs missing"))
        },
    ));
    checks.push((
        "events in order per channel".into(),
        if out_of_order == 0 {
            Ok(String::new())
        } else {
            Err(format!(
                "{out_of_order} out of order: {}",
                examples.join("; ")
            ))
        },
    ));
    let mut failed = 0;
    for (name, outcome) in &checks {
        match outcome {
            Ok(detail) => out.push_str(&format!("  pass  {name}  {detail}\n")),
            Err(problem) => {
                failed += 1;
                out.push_str(&format!("  FAIL  {name}: {problem}\n"));
            }
        }
    }
    out.push_str("\n  the instances at the end:\n");
    for line in servers {
        out.push_str(&format!("    {line}\n"));
    }
    let timeline = shared.timeline.lock().expect("timeline");
    if !timeline.is_empty() {
        out.push_str("\n  timeline:\n");
        for line in timeline.iter() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    drop(timeline);
    for w in windows.iter().filter(|w| !w.examples.is_empty()) {
        out.push_str(&format!("\n  {} examples:\n", w.name));
        for e in &w.examples {
            out.push_str(&format!("    {e}\n"));
        }
    }
    print!("{out}");
    if let Some(path) = &args.out {
        crate::write_json(
            path,
            &Summary {
                label: &args.label,
                instances: shared.instances.len(),
                sessions: sessions.len(),
                windows: &windows,
                duplicates,
                out_of_order,
                missing,
                passed: failed == 0,
            },
        )?;
    }
    if failed > 0 {
        bail!("{failed} of {} cluster checks failed", checks.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_with_run(run: &str) -> Shared {
        Shared {
            run: run.into(),
            instances: Vec::new(),
            users: Vec::new(),
            channels: Vec::new(),
            acks: Mutex::new(Vec::new()),
            seen: Mutex::new(HashSet::new()),
            windows: Mutex::new(Vec::new()),
            current: AtomicUsize::new(0),
            next_index: Vec::new(),
            next_instance: AtomicUsize::new(0),
            one_url: false,
            t0: Instant::now(),
            timeline: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn contents_name_their_post_and_only_this_run_is_recognised() {
        let shared = shared_with_run("0badcafe");
        let post = PostRef {
            channel: 1,
            index: 42,
        };
        assert_eq!(shared.parse_content(&shared.content(&post)), Some(post));
        assert_eq!(
            shared_with_run("00000000").parse_content(&shared.content(&PostRef {
                channel: 0,
                index: 1
            })),
            None
        );
        assert_eq!(shared.parse_content("hello"), None);
        assert_eq!(shared.parse_content("cl/0badcafe/x/1"), None);
    }

    #[test]
    fn a_page_shows_a_post_on_it_or_older_than_a_full_page() {
        let ids: Vec<String> = (0..PAGE)
            .map(|i| format!("01J{:03}", 100 + PAGE - i))
            .collect();
        let page = PageRead {
            ids: ids.clone(),
            contents: Vec::new(),
        };
        let set: HashSet<&str> = page.ids.iter().map(String::as_str).collect();
        assert!(shows(&page, &set, &ids[3]));
        assert!(
            shows(&page, &set, "01J000"),
            "older than the whole full page"
        );
        assert!(
            !shows(&page, &set, "01J999"),
            "newer than the page and not on it"
        );
        let short = PageRead {
            ids: ids[..3].to_vec(),
            contents: Vec::new(),
        };
        let set: HashSet<&str> = short.ids.iter().map(String::as_str).collect();
        assert!(
            !shows(&short, &set, "01J000"),
            "a page that is not full hides nothing"
        );
    }

    /// A chat-api in process on the SQLite database at `db` with its own memory cache and event
    /// hub: what one instance without a backplane is.
    async fn chat_api(db: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
        let config = chat_api::Config {
            database_url: format!("sqlite://{}", db.display()),
            rate_limit: false,
            ..chat_api::Config::default()
        };
        let state = chat_api::AppState::from_config(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(chat_api::serve(
            listener,
            chat_api::app(state),
            chat_api::ServerLimits::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        (base, stop)
    }

    fn args(instances: Vec<String>) -> ClusterArgs {
        ClusterArgs {
            instances,
            users: 2,
            channels: 2,
            posts: 6,
            pace: Duration::from_millis(20),
            poll: Duration::from_millis(50),
            chaos: false,
            kill: None,
            outage: Duration::from_secs(1),
            converge_within: Duration::from_secs(3),
            label: "test".into(),
            out: None,
        }
    }

    /// One server listed twice is trivially one coherent "cluster": every check must pass, so
    /// the checks do not fail on a correct server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_server_listed_twice_passes() {
        let dir = tempfile::tempdir().unwrap();
        let (base, _stop) = chat_api(&dir.path().join("chat.db")).await;
        run(&args(vec![base.clone(), base])).await.unwrap();
    }

    /// Two servers on one database without a backplane: posts on one never reach the sessions
    /// of the other, so the check must fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_servers_without_a_backplane_fail() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let (first, _stop_first) = chat_api(&db).await;
        let (second, _stop_second) = chat_api(&db).await;
        let err = run(&args(vec![first, second])).await.unwrap_err();
        assert!(err.to_string().contains("cluster checks failed"), "{err:#}");
    }

    #[test]
    fn percentiles_pick_ranks() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples).unwrap();
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        assert!(Percentiles::of(&[]).is_none());
    }
}
