//! gRPC through the real binary: a tonic service and a tonic client (messages written by
//! hand with prost's derive, so no `protoc`), unary and server-streaming calls with their
//! trailers, and the proxy's own failures told as gRPC statuses (HTTP 200, `grpc-status`).

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::Request;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::codegen::BoxFuture;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use weft_conformance::*;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

const SAY: &str = "/weft.test.Echo/Say";
const COUNT: &str = "/weft.test.Echo/Count";

/// `weft.test.Echo`: `Say` answers its text back (or NOT_FOUND for "missing"), `Count`
/// streams `count` messages.
#[derive(Clone)]
struct Echo;

struct Say;

impl tonic::server::UnaryService<Msg> for Say {
    type Response = Msg;
    type Future = BoxFuture<tonic::Response<Msg>, Status>;
    fn call(&mut self, request: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let msg = request.into_inner();
            if msg.text == "missing" {
                return Err(Status::not_found("no such thing"));
            }
            Ok(tonic::Response::new(Msg {
                text: format!("echo: {}", msg.text),
                count: msg.count,
            }))
        })
    }
}

struct Count;

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

impl tonic::server::ServerStreamingService<Msg> for Count {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<tonic::Response<MsgStream>, Status>;
    fn call(&mut self, request: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let n = request.into_inner().count;
            let items = (0..n).map(|i| {
                Ok(Msg {
                    text: format!("item {i}"),
                    count: i,
                })
            });
            Ok(tonic::Response::new(
                Box::pin(futures_util::stream::iter(items)) as MsgStream
            ))
        })
    }
}

impl Echo {
    async fn call(self, req: Request<Incoming>) -> http::Response<tonic::body::Body> {
        let codec = ProstCodec::<Msg, Msg>::default();
        let mut grpc = tonic::server::Grpc::new(codec);
        match req.uri().path() {
            SAY => grpc.unary(Say, req).await,
            COUNT => grpc.server_streaming(Count, req).await,
            _ => Status::unimplemented("no such method").into_http(),
        }
    }
}

/// The tonic service on a fresh loopback port, HTTP/2 only (as gRPC servers are).
async fn start_service() -> std::net::SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req| async move { Ok::<_, Infallible>(Echo.call(req).await) });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn config(endpoint: std::net::SocketAddr, timeout: &str) -> String {
    Config::new()
        .cluster_with("grpc", &[endpoint], "protocol = \"http2\"")
        .route(
            "grpc",
            "path_prefix = \"/\"",
            "grpc",
            &[],
            &format!("timeout = \"{timeout}\""),
        )
        .to_string()
}

async fn client(weft: &Weft) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", weft.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect to weft");
    tonic::client::Grpc::new(channel)
}

async fn say(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    request: tonic::Request<Msg>,
) -> Result<Msg, Status> {
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(SAY);
    grpc.unary(request, path, ProstCodec::default())
        .await
        .map(tonic::Response::into_inner)
}

fn msg(text: &str, count: u32) -> tonic::Request<Msg> {
    tonic::Request::new(Msg {
        text: text.to_owned(),
        count,
    })
}

#[tokio::test]
async fn unary_and_streaming_calls_pass_with_their_trailers() {
    let service = start_service().await;
    let weft = Weft::start(&config(service, "15s")).await;
    let mut grpc = client(&weft).await;

    let reply = say(&mut grpc, msg("hello", 7)).await.expect("unary call");
    assert_eq!((reply.text.as_str(), reply.count), ("echo: hello", 7));
    // The service's own status travels in the trailers; the proxy keeps it.
    let status = say(&mut grpc, msg("missing", 0)).await.expect_err("NOT_FOUND");
    assert_eq!((status.code(), status.message()), (Code::NotFound, "no such thing"));

    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static(COUNT);
    let mut stream = grpc
        .server_streaming(msg("", 50), path, ProstCodec::<Msg, Msg>::default())
        .await
        .expect("streaming call")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(item) = stream.message().await.expect("stream item") {
        seen.push(item.count);
    }
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    // The trailers ended the stream with OK (a missing grpc-status would be an error above).
    assert!(stream.trailers().await.is_ok());
}

#[tokio::test]
async fn an_unreachable_service_is_unavailable() {
    let closed = dead_addr();
    let weft = Weft::start(&config(closed, "15s")).await;
    let mut grpc = client(&weft).await;
    let status = say(&mut grpc, msg("hello", 0)).await.expect_err("no service");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "upstream unreachable",
        "the proxy's answer, not the client's"
    );
}

/// A gRPC upstream that takes longer than anyone waits.
async fn stalled_service() -> Upstream {
    Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        http::Response::new(full(""))
    })
    .await
}

#[tokio::test]
async fn the_route_timeout_bounds_a_call_as_deadline_exceeded() {
    let up = stalled_service().await;
    let weft = Weft::start(&config(up.addr, "300ms")).await;
    let mut grpc = client(&weft).await;
    let mut request = msg("slow", 0);
    // The client's own deadline is far; the route's is what expires.
    request.set_timeout(Duration::from_secs(20));
    let status = say(&mut grpc, request).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "upstream timed out");
}

#[tokio::test]
async fn grpc_timeout_is_the_calls_deadline_and_errors_answer_200() {
    let up = stalled_service().await;
    let weft = Weft::start(&config(up.addr, "15s")).await;
    // A client that enforces no deadline itself: only the proxy can end this call early.
    let frame = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let request = Request::post(weft.url(SAY))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(Full::new(frame.clone()))
        .expect("request");
    let reply = tokio::time::timeout(Duration::from_secs(10), send(&h2c_client(), request))
        .await
        .expect("the proxy ended the call at its deadline");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/grpc"));
    assert_eq!(reply.header("grpc-status"), Some("4"));
    assert_eq!(reply.header("grpc-message"), Some("upstream timed out"));
    // A route the proxy has none for: UNIMPLEMENTED, still HTTP 200.
    let weft = Weft::start(&config(up.addr, "15s").replace("path_prefix = \"/\"", "path_prefix = \"/other\"")).await;
    let request = Request::post(weft.url(SAY))
        .header("content-type", "application/grpc+proto")
        .body(Full::new(frame))
        .expect("request");
    let reply = send(&h2c_client(), request).await;
    assert_eq!((reply.status, reply.header("grpc-status")), (200, Some("12")));
    // A plain HTTP client on the same route still gets an HTTP status.
    assert_eq!(get(&weft.url("/x")).await.status, 404);
}

#[tokio::test]
async fn grpc_timeout_binds_grpc_calls_only_and_is_never_the_endpoints_failure() {
    // Answers after 200 ms: well within the route's timeout, long past a 1 ns deadline.
    let up = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        http::Response::new(full("ok"))
    })
    .await;
    let config = Config::new()
        .cluster_with(
            "grpc",
            &[up.addr],
            "protocol = \"http2\"\n[clusters.outlier_detection]\nconsecutive_failures = 3",
        )
        .route("all", "path_prefix = \"/\"", "grpc", &[], "timeout = \"15s\"");
    let weft = Weft::start(&config.to_string()).await;
    let client = h2c_client();
    // Plain HTTP/2 requests: grpc-timeout means nothing to them.
    for _ in 0..8 {
        let request = Request::get(weft.url("/plain"))
            .header("grpc-timeout", "1n")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let reply = send(&client, request).await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "ok"));
    }
    // gRPC calls: the deadline is theirs, and passing it is the client's doing.
    for _ in 0..8 {
        let request = Request::post(weft.url(SAY))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "1n")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .expect("request");
        let reply = send(&client, request).await;
        assert_eq!((reply.status, reply.header("grpc-status")), (200, Some("4")));
    }
    let endpoint = format!("{{cluster=\"grpc\",endpoint=\"{}\"}}", up.addr);
    assert_eq!(
        weft.metric(&format!("weft_upstream_ejections_total{endpoint}")).await,
        0.0
    );
    assert_eq!(
        weft.metric(&format!("weft_upstream_failures_total{endpoint}")).await,
        0.0
    );
    assert_eq!(
        weft.metric(&format!("weft_upstream_endpoint_healthy{endpoint}")).await,
        1.0
    );
}
