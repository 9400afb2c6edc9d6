//! An upload takes a bounded number of chunks (`limits.max_upload_chunks`): a client
//! sending a byte at a time is refused past it (each chunk is an object, listed in the
//! upload's row), and what it sent stays, to be finished with a last chunk.

use berth_config::Config;
use berth_storage::{Algorithm, Digest, Storage, StorageError};
use bytes::Bytes;
use futures::stream;

fn body(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    stream::iter(vec![Ok(Bytes::copy_from_slice(data))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_takes_a_bounded_number_of_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(tmp.path());
    assert_eq!(config.limits.max_upload_chunks, 10_000, "the default");
    config.limits.max_upload_chunks = 50;
    let s = Storage::open(&config).await.unwrap();
    let up = s.start_upload("acme/app", Algorithm::Sha256).await.unwrap();
    for i in 0..50u64 {
        let state = s
            .append_upload("acme/app", &up.id, Some(i), body(b"x"))
            .await
            .unwrap();
        assert_eq!(state.size, i + 1);
    }
    match s
        .append_upload("acme/app", &up.id, Some(50), body(b"x"))
        .await
    {
        Err(StorageError::TooManyChunks { limit: 50 }) => {}
        other => panic!("expected the chunk limit, got {other:?}"),
    }
    // What was sent stays: the upload is finished with its last chunk.
    let mut all = vec![b'x'; 50];
    all.push(b'!');
    let digest = Digest::of(Algorithm::Sha256, &all);
    s.complete_upload("acme/app", &up.id, &digest, Some(50), body(b"!"))
        .await
        .unwrap();
    assert_eq!(s.blob("acme/app", &digest).await.unwrap().size, 51);
}
