//! Helpers for tests that read a watch stream of the real `kube::Api::watch`.

use std::time::Duration;

use futures::{Stream, StreamExt as _};
use kube::api::WatchEvent;
use kube::ResourceExt as _;

/// How long the helpers wait for an event or the end of a stream.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The next event of a watch stream; panics after [`STREAM_TIMEOUT`], at the end of the
/// stream, or on an error.
pub async fn next_event<K, S>(stream: &mut S) -> WatchEvent<K>
where
    S: Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    tokio::time::timeout(STREAM_TIMEOUT, stream.next())
        .await
        .expect("a watch event within the timeout")
        .expect("the stream has not ended")
        .expect("the event parses")
}

/// `("ADDED", name)`, `("BOOKMARK", resourceVersion)`, `("ERROR", message)`...
pub fn event_summary<K: kube::Resource>(event: &WatchEvent<K>) -> (&'static str, String) {
    match event {
        WatchEvent::Added(o) => ("ADDED", o.name_any()),
        WatchEvent::Modified(o) => ("MODIFIED", o.name_any()),
        WatchEvent::Deleted(o) => ("DELETED", o.name_any()),
        WatchEvent::Bookmark(b) => ("BOOKMARK", b.metadata.resource_version.clone()),
        WatchEvent::Error(e) => ("ERROR", e.to_string()),
    }
}

/// Waits for the stream's end (clean or cut), skipping what comes before it; panics after
/// [`STREAM_TIMEOUT`].
pub async fn stream_end<K, S>(stream: &mut S)
where
    S: Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    tokio::time::timeout(STREAM_TIMEOUT, async {
        // A cut connection may surface as one read error before the end.
        while stream.next().await.is_some() {}
    })
    .await
    .expect("the stream ends within the timeout");
}
