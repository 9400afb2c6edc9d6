//! `berth_server::downloads` against the actix-http it is pinned to (server/Cargo.toml):
//! file bodies sent by the connection's `poll_flush` must come after their headers and
//! before the next response, whole, however the client reads. These tests fail (wrong
//! bytes, or a timeout instead of a hang) if actix-http's HTTP/1 dispatcher changes
//! when it flushes: calling `poll_flush` with its own buffer not yet written out,
//! writing the next response while a body is unfinished, or no longer flushing while
//! a body is pending.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{map_config, Service, ServiceFactory};
use actix_web::dev::{AppConfig, Extensions};
use actix_web::{web, App, HttpRequest, HttpResponse};
use berth_server::downloads::{Connection, FileBody, Handoff};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// berthd's write buffer (`WRITE_BUFFER_SIZE` in lib.rs): the dispatcher flushes when
/// it is full, too.
const WRITE_BUFFER_SIZE: usize = 1024 * 1024;

/// The pieces `/file` sends: two ranges of the data file (two file handles), so a
/// body crosses from one file to the next.
const PIECES: [Range<u64>; 2] = [0..1_500_000, 2_000_000..4_000_000];

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    data: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        File::create(&path).unwrap().write_all(&data).unwrap();
        Fixture {
            _dir: dir,
            path,
            data,
        }
    }

    /// What `/file` answers.
    fn expected(&self) -> Vec<u8> {
        PIECES
            .iter()
            .flat_map(|r| self.data[r.start as usize..r.end as usize].iter().copied())
            .collect()
    }
}

/// Serves connections on `listener` as berthd does (`berth_server::serve`): an
/// actix-http HTTP/1 service over [`Connection`], the handoff slot as connection data.
/// `/file` answers with a [`FileBody`], `/small` with ordinary bytes.
async fn serve(listener: TcpListener, path: PathBuf) {
    loop {
        let (socket, _) = listener.accept().await.unwrap();
        let path = path.clone();
        actix_web::rt::spawn(async move {
            let app = App::new()
                .route(
                    "/file",
                    web::get().to(move |req: HttpRequest| {
                        let path = path.clone();
                        async move {
                            let handoff = req.conn_data::<Rc<Handoff>>().unwrap().clone();
                            let pieces = PIECES
                                .iter()
                                .map(|r| (File::open(&path).unwrap(), r.clone()))
                                .collect();
                            let length = PIECES.iter().map(|r| r.end - r.start).sum();
                            HttpResponse::Ok()
                                .no_chunking(length)
                                .body(FileBody::new(handoff, pieces))
                        }
                    }),
                )
                .route("/small", web::get().to(|| async { "{}" }));
            let factory = HttpService::build()
                .h1_write_buffer_size(WRITE_BUFFER_SIZE)
                .on_connect_ext(|conn: &Connection, data: &mut Extensions| conn.attach(data))
                .h1(map_config(app, |_| AppConfig::default()));
            let service = factory.new_service(()).await.unwrap();
            // A client that leaves ends its connection with an error: not this test's.
            let _ = service.call((Connection::new(socket), None)).await;
        });
    }
}

async fn start() -> (Fixture, std::net::SocketAddr) {
    let fixture = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_web::rt::spawn(serve(listener, fixture.path.clone()));
    (fixture, addr)
}

/// Fails instead of hanging when the file is never sent.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the connection stalled: actix-http no longer flushes as downloads expects")
}

#[actix_web::test]
async fn pipelined_file_bodies_come_whole_and_in_order() {
    let (fixture, addr) = start().await;
    let expected = fixture.expected();
    within(async {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: berth\r\n\r\n");
        // All at once, before reading anything: the socket fills, sends block midway.
        let requests = [
            get("/small"),
            get("/file"),
            get("/file"),
            get("/small"),
            get("/file"),
        ];
        conn.write_all(requests.concat().as_bytes()).await.unwrap();
        let mut conn = BufReader::new(conn);
        for (i, request) in requests.iter().enumerate() {
            let (status, body) = berth_tests::read_response(&mut conn).await;
            assert_eq!(status, 200, "response {i}");
            if request.contains("/file") {
                assert!(body == expected, "response {i}: the file's bytes");
            } else {
                assert_eq!(body, b"{}", "response {i}");
            }
        }
    })
    .await;
}

#[actix_web::test]
async fn slow_readers_and_abandoned_downloads() {
    let (fixture, addr) = start().await;
    let expected = fixture.expected();
    within(async {
        // A reader that takes small bites: every byte arrives, in order.
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(
            b"GET /file HTTP/1.1\r\nHost: berth\r\n\r\nGET /small HTTP/1.1\r\nHost: berth\r\n\r\n",
        )
        .await
        .unwrap();
        let mut conn = BufReader::with_capacity(4096, conn);
        let (status, body) = berth_tests::read_response(&mut conn).await;
        assert_eq!(status, 200);
        assert!(body == expected);
        assert_eq!(
            berth_tests::read_response(&mut conn).await,
            (200, b"{}".to_vec())
        );

        // Clients that leave mid-download disturb nobody.
        for _ in 0..3 {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.write_all(b"GET /file HTTP/1.1\r\nHost: berth\r\n\r\n")
                .await
                .unwrap();
            let mut start = [0u8; 1000];
            conn.read_exact(&mut start).await.unwrap();
        }
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /file HTTP/1.1\r\nHost: berth\r\n\r\n")
            .await
            .unwrap();
        let (status, body) = berth_tests::read_response(&mut BufReader::new(conn)).await;
        assert_eq!(status, 200);
        assert!(body == expected);
    })
    .await;
}

#[actix_web::test]
async fn concurrent_slow_downloads_on_one_thread_each_get_their_own_bytes() {
    // The connections of one worker share its read buffer: a write the socket takes
    // only in part must not leave another connection's bytes in what follows.
    let (fixture, addr) = start().await;
    let expected = fixture.expected();
    within(async {
        let readers = (0..4).map(|i| {
            let expected = &expected;
            async move {
                // A small receive window: the server's writes stop part-way again and again.
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.set_recv_buffer_size(8192).unwrap();
                let mut conn = socket.connect(addr).await.unwrap();
                conn.write_all(b"GET /file HTTP/1.1\r\nHost: berth\r\n\r\n")
                    .await
                    .unwrap();
                // Different bite sizes and pauses, so the sockets fill at different times.
                let mut conn = BufReader::with_capacity(1000 + 3000 * i, conn);
                tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
                let (status, body) = berth_tests::read_response(&mut conn).await;
                assert_eq!(status, 200, "reader {i}");
                assert!(&body == expected, "reader {i}: the file's bytes");
            }
        });
        futures::future::join_all(readers).await;
    })
    .await;
}
