//! `tierlog tail`: follows `GET /audit/stream` of a running tierlog over HTTP,
//! writing each event's JSON line to standard output, one per line. It reconnects
//! with `Last-Event-ID` when the stream ends or drops it, so nothing is missed while
//! the node still holds the events; notices go to standard error.

use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::io::Write;

/// How long to wait before connecting again.
const RECONNECT: Duration = Duration::from_secs(1);

/// Follows the stream of the tierlog at `base` (`http://host:port`) with `key`,
/// filtered by `query` (as for `/audit/combined`), until an answer refuses it (an
/// error naming the status and the service's message) or the process is stopped.
pub async fn follow(base: &str, key: &str, query: &str) -> anyhow::Result<()> {
    let base: Uri = base.trim_end_matches('/').parse().context("TIERLOG_URL must be a URL such as http://127.0.0.1:8080")?;
    anyhow::ensure!(base.scheme_str() == Some("http"), "TIERLOG_URL must start with http:// (tail speaks plain HTTP)");
    let authority = base.authority().context("TIERLOG_URL names no host")?.clone();
    let path = format!("{}/audit/stream{}{query}", base.path().trim_end_matches('/'), if query.is_empty() { "" } else { "?" });
    let mut last: Option<String> = None;
    let mut out = std::io::stdout();
    loop {
        match follow_once(&authority, &path, key, &mut last, &mut out).await {
            Ok(Ended::Refused(status, body)) => anyhow::bail!("{base} answered {status}: {}", body.trim()),
            Ok(Ended::Closed) => eprintln!("tierlog tail: the stream ended; connecting again"),
            Ok(Ended::Dropped(notice)) => eprintln!("tierlog tail: dropped for reading too slowly ({notice}); connecting again"),
            Err(e) => eprintln!("tierlog tail: {e:#}; connecting again"),
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// How one connection ended.
enum Ended {
    Refused(StatusCode, String),
    Closed,
    Dropped(String),
}

async fn follow_once(
    authority: &hyper::http::uri::Authority,
    path: &str,
    key: &str,
    last: &mut Option<String>,
    out: &mut std::io::Stdout,
) -> anyhow::Result<Ended> {
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await.with_context(|| format!("cannot connect to {authority}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::get(path)
        .header("host", authority.as_str())
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "text/event-stream");
    if let Some(id) = last.as_deref() {
        request = request.header("last-event-id", id);
    }
    let response = sender.send_request(request.body(Empty::<Bytes>::new())?).await?;
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if status.is_client_error() {
            return Ok(Ended::Refused(status, text));
        }
        anyhow::bail!("the service answered {status}: {}", text.trim());
    }
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut payload) = ("message".to_owned(), None, String::new());
            for line in String::from_utf8_lossy(&block).lines() {
                let Some((field, value)) = line.split_once(':') else { continue };
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_owned(),
                    "id" => id = Some(value.to_owned()),
                    "data" => payload.push_str(value),
                    _ => {}
                }
            }
            match event.as_str() {
                "message" if !payload.is_empty() => {
                    out.write_all(payload.as_bytes())?;
                    out.write_all(b"\n")?;
                    out.flush()?;
                    if id.is_some() {
                        *last = id;
                    }
                }
                "dropped" => return Ok(Ended::Dropped(payload)),
                "reset" | "closing" => eprintln!("tierlog tail: {payload}"),
                _ => {}
            }
        }
    }
    Ok(Ended::Closed)
}
