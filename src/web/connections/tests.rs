//! The connection cap and the time limits, over real sockets on `127.0.0.1:0`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::web::tests::{Fake, METRIC_LINE, STUCK, get, parse_reply, serve_limited};
use crate::web::{Limits, MAX_CONNECTIONS, WebConfig};

/// Limits under which nothing times out while a test runs.
fn patient() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(3600),
        tls_handshake_timeout: Duration::from_secs(3600),
        write_stall_timeout: Duration::from_secs(3600),
    }
}

/// Reads until the server closes the connection, returning what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(STUCK, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection");
    received
}

#[tokio::test]
async fn idle_connections_at_the_cap_cannot_keep_a_scrape_out() {
    let cap = 4;
    let connections = Connections::new(cap);
    let served = serve_limited(
        Arc::new(Fake::default()),
        WebConfig::default(),
        patient(),
        Arc::clone(&connections),
    )
    .await;
    // Twice the cap: silent sockets and ones stuck half-way through their headers.
    let mut idle = Vec::new();
    for i in 0..2 * cap {
        let mut stream = TcpStream::connect(served.addr).await.unwrap();
        if i % 2 == 1 {
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n")
                .await
                .unwrap();
        }
        idle.push(stream);
    }
    let scrape = tokio::time::timeout(STUCK, get(served.addr, "/metrics"))
        .await
        .expect("a scrape gets in past idle connections");
    assert_eq!(scrape.status, 200);
    // The oldest (silent from the start, so always the quietest) made room first, and the
    // table never holds more than the cap.
    assert!(until_closed(&mut idle[0]).await.is_empty());
    assert!(connections.len() <= cap);
}

#[tokio::test]
async fn silent_slow_and_idle_keep_alive_clients_are_closed() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(200),
        ..patient()
    };
    let served = serve_limited(
        Arc::new(Fake::default()),
        WebConfig::default(),
        limits,
        Connections::new(MAX_CONNECTIONS),
    )
    .await;
    let mut silent = TcpStream::connect(served.addr).await.unwrap();
    let mut slow = TcpStream::connect(served.addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // One full request on a keep-alive connection, then silence.
    let mut kept = TcpStream::connect(served.addr).await.unwrap();
    kept.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = until_closed(&mut kept).await;
    let reply = parse_reply(&answered);
    assert_eq!((reply.status, reply.text().as_str()), (200, "OK\n"));
    for stream in [&mut silent, &mut slow] {
        let received = String::from_utf8_lossy(&until_closed(stream).await).into_owned();
        assert!(!received.contains("200 OK"), "{received}");
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed() {
    let limits = Limits {
        write_stall_timeout: Duration::from_millis(200),
        ..patient()
    };
    let connections = Connections::new(MAX_CONNECTIONS);
    let backend = Arc::new(Fake {
        huge_metrics: true,
        ..Fake::default()
    });
    let served = serve_limited(
        backend,
        WebConfig::default(),
        limits,
        Arc::clone(&connections),
    )
    .await;
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // The first bytes of the response show the connection is open and answering.
    let mut first = [0; 1024];
    let read = tokio::time::timeout(STUCK, stream.read(&mut first))
        .await
        .expect("the response starts")
        .unwrap();
    assert!(first[..read].starts_with(b"HTTP/1.1 200"));
    // The response is far larger than the socket buffers: the server's write stalls until
    // its deadline closes the connection, which leaves the table.
    tokio::time::timeout(STUCK, async {
        while connections.len() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stalled connection is closed");
    let received = until_closed(&mut stream).await;
    assert!(
        received.len() < METRIC_LINE.len() * 500_000,
        "the whole response was sent"
    );
}
