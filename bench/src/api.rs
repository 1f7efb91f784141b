//! The same operations through the API server, with kube-rs as any client would do them.

use crate::fixture::{self, NAMESPACE};
use crate::stats::{measure, Sample};
use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latencies of create / get / replace / list through the API server.
pub struct ApiOps {
    /// POST a pod.
    pub create: Sample,
    /// GET a pod.
    pub get: Sample,
    /// PUT a pod with the resourceVersion the client last saw.
    pub update: Sample,
    /// LIST the namespace (typed decode included).
    pub list: Sample,
    /// LIST the namespace, body read but not decoded: the server's share.
    pub list_raw: Sample,
}

fn pods(client: &kube::Client) -> Api<Pod> {
    Api::namespaced(client.clone(), NAMESPACE)
}

/// Run the API operations: pods `0..count` are created, read, replaced; then `lists` lists.
pub async fn run(
    client: &kube::Client,
    concurrency: usize,
    count: usize,
    lists: usize,
    limit: Duration,
) -> Result<ApiOps> {
    // The latest object per pod, so a replace carries the current resourceVersion without a read.
    let latest: Arc<Vec<Mutex<Option<Pod>>>> = Arc::new((0..count).map(|_| Mutex::new(None)).collect());

    let (api, slots) = (pods(client), latest.clone());
    let create = measure(concurrency, count, limit, move |i| {
        let (api, slots) = (api.clone(), slots.clone());
        async move {
            let created = api.create(&PostParams::default(), &fixture::pod(i)?).await?;
            *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(created);
            Ok(())
        }
    })
    .await
    .context("API create")?;
    let created = create.len();

    let api = pods(client);
    let get = measure(concurrency, created, limit, move |i| {
        let api = api.clone();
        async move {
            api.get(&fixture::name(i)).await?;
            Ok(())
        }
    })
    .await
    .context("API get")?;

    let (api, slots) = (pods(client), latest.clone());
    let update = measure(concurrency, created, limit, move |i| {
        let (api, slots) = (api.clone(), slots.clone());
        async move {
            let current = slots[i].lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut pod = current.with_context(|| format!("pod {i} was not created"))?;
            pod.metadata.annotations.get_or_insert_default().insert("bench.ferry.dev/revision".into(), "2".into());
            let updated = api.replace(&fixture::name(i), &PostParams::default(), &pod).await?;
            *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(updated);
            Ok(())
        }
    })
    .await
    .context("API update")?;

    let api = pods(client);
    let list = measure(concurrency, lists, limit, move |_| {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await?;
            ensure!(list.items.len() >= created, "list returned {} pods, expected {created}", list.items.len());
            Ok(())
        }
    })
    .await
    .context("API list")?;

    let list_raw = measure(concurrency, lists, limit, raw_list_op(client, None)).await.context("raw API list")?;

    Ok(ApiOps { create, get, update, list, list_raw })
}

/// Create pods `from..total` with `concurrency` parallel POSTs.
pub async fn fill(
    client: &kube::Client,
    from: usize,
    total: usize,
    concurrency: usize,
    limit: Duration,
) -> Result<Sample> {
    let api = pods(client);
    let sample = measure(concurrency, total.saturating_sub(from), limit, move |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &fixture::pod(from + i)?).await?;
            Ok(())
        }
    })
    .await
    .context("creating pods for the large list")?;
    ensure!(
        sample.len() == total.saturating_sub(from),
        "only {} of {} pods were created in time",
        sample.len(),
        total - from
    );
    Ok(sample)
}

/// Timings of complete lists of a large namespace.
pub struct BigList {
    /// Pods per list.
    pub pods: usize,
    /// `ListParams::default()` (one response, typed decode).
    pub full: Sample,
    /// `limit=page` followed through every `continue` token (typed decode).
    pub paged: Sample,
    /// The same while another client writes a pod every 10 ms.
    pub paged_busy: Sample,
    /// Writes the background client made during `paged_busy`.
    pub writes: usize,
    /// One raw GET, body read but not decoded: the server's share.
    pub raw: Sample,
    /// Page size of `paged`.
    pub page: u32,
    /// Size of the raw response body.
    pub bytes: usize,
}

/// List every pod `rounds` times each way; every list must return `expected` pods.
pub async fn big_list(
    client: &kube::Client,
    expected: usize,
    rounds: usize,
    page: u32,
    limit: Duration,
) -> Result<BigList> {
    let api = pods(client);
    let full = measure(1, rounds, limit, move |_| {
        let api = api.clone();
        async move {
            let n = api.list(&ListParams::default()).await?.items.len();
            ensure!(n == expected, "full list returned {n} pods, expected {expected}");
            Ok(())
        }
    })
    .await
    .context("full list")?;

    let api = pods(client);
    let paged = measure(1, rounds, limit, move |_| {
        let api = api.clone();
        async move {
            let n = list_paged(&api, page, expected).await?;
            ensure!(n == expected, "paged list returned {n} pods, expected {expected}");
            Ok(())
        }
    })
    .await
    .context("paged list")?;

    let bytes = Arc::new(AtomicUsize::new(0));
    let raw = measure(1, rounds, limit, raw_list_op(client, Some(bytes.clone()))).await.context("raw list")?;

    // The same paged list while another client keeps writing: once the cache has moved past
    // the list's revision, continuation pages are read from etcd at that revision.
    let stop = Arc::new(AtomicBool::new(false));
    let background = tokio::spawn(keep_writing(pods(client), stop.clone(), limit));
    let api = pods(client);
    let paged_busy = measure(1, rounds, limit, move |_| {
        let api = api.clone();
        async move {
            let n = list_paged(&api, page, expected).await?;
            ensure!(n == expected, "paged list returned {n} pods, expected {expected}");
            Ok(())
        }
    })
    .await
    .context("paged list under writes");
    stop.store(true, Ordering::Relaxed);
    let writes = background.await.context("the background writer panicked")??;
    let paged_busy = paged_busy?;

    Ok(BigList { pods: expected, full, paged, paged_busy, writes, raw, page, bytes: bytes.load(Ordering::Relaxed) })
}

/// A raw GET of the namespace's pods; records the body size in `size` when given.
fn raw_list_op(
    client: &kube::Client,
    size: Option<Arc<AtomicUsize>>,
) -> impl Fn(usize) -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync + 'static {
    let client = client.clone();
    move |_| {
        let (client, size) = (client.clone(), size.clone());
        Box::pin(async move {
            let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
            let (code, body) = ferry_testkit::raw(&client, "GET", &path, None, Vec::new()).await?;
            ensure!(code == 200, "raw list answered {code}");
            if let Some(size) = size {
                size.store(body.len(), Ordering::Relaxed);
            }
            Ok(())
        })
    }
}

/// Replace pod 0 every 10 ms until `stop` (or `limit`); returns the number of writes.
async fn keep_writing(api: Api<Pod>, stop: Arc<AtomicBool>, limit: Duration) -> Result<usize> {
    let name = fixture::name(0);
    let mut pod = api.get(&name).await?;
    let deadline = std::time::Instant::now() + limit;
    let mut writes = 0;
    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
        pod.metadata.annotations.get_or_insert_default().insert("bench.ferry.dev/tick".into(), writes.to_string());
        pod = api.replace(&name, &PostParams::default(), &pod).await?;
        writes += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(writes)
}

/// Follow `continue` tokens through a whole list; returns the number of pods seen.
pub async fn list_paged(api: &Api<Pod>, page: u32, expected: usize) -> Result<usize> {
    let mut seen = 0;
    let mut token: Option<String> = None;
    let max_pages = expected / page.max(1) as usize + 10;
    for _ in 0..max_pages {
        let mut params = ListParams::default().limit(page);
        if let Some(t) = token.take() {
            params = params.continue_token(&t);
        }
        let list = api.list(&params).await?;
        seen += list.items.len();
        match list.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(t) => token = Some(t),
            None => return Ok(seen),
        }
    }
    bail!("paged list did not end within {max_pages} pages")
}
