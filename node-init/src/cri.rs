//! containerd's CRI, reached as kubeadm and the kubelet reach it: gRPC on
//! containerd's unix socket, `runtime.v1`. Only what the image pre-pull
//! asks: the runtime's version, whether an image is present
//! (`ImageStatus`), and `PullImage`.
//!
//! A pull through the CRI is done by containerd itself, so containerd's own
//! environment (the proxy drop-in), its trust store and its registry config
//! decide how the image is fetched, exactly as for the kubelet's pulls.
//!
//! The messages are cri-api's (`pkg/apis/runtime/v1/api.proto`), with its
//! field numbers; fields node-init never sets or reads are left out, which
//! protobuf allows both ways.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

const PULL: &str = "/runtime.v1.ImageService/PullImage";
const STATUS: &str = "/runtime.v1.ImageService/ImageStatus";
const VERSION: &str = "/runtime.v1.RuntimeService/Version";

/// `ImageSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `PullImageRequest`: no auth (the registry is anonymous or containerd's
/// config carries it) and no sandbox config (a pull ahead of any pod).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageResponse {
    #[prost(string, tag = "1")]
    pub image_ref: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `ImageStatusResponse`: `image` is absent when the runtime does not
/// have it (not an error, as cri-api documents).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusResponse {
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

/// `Image`: its id and size.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint64, tag = "4")]
    pub size: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    #[prost(string, tag = "1")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// One connection to the runtime's socket.
pub struct Cri {
    socket: PathBuf,
    channel: Channel,
}

impl Cri {
    /// Connects within `timeout`; the error names the socket.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self> {
        let path = socket.to_path_buf();
        // The URI is required and never used: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://cri.invalid").connect_timeout(timeout);
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }));
        let channel = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| anyhow::anyhow!("no answer in {}", humantime::format_duration(timeout)))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("connecting to the container runtime at {}", socket.display()))?;
        Ok(Self { socket: socket.to_path_buf(), channel })
    }

    async fn call<Req, Resp>(&self, method: &'static str, req: Req, timeout: Duration) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let call = grpc.unary(request, PathAndQuery::from_static(method), codec);
        match tokio::time::timeout(timeout, call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => {
                Err(tonic::Status::deadline_exceeded(format!("no answer in {}", humantime::format_duration(timeout))))
            }
        }
    }

    /// The runtime's name, version and CRI version.
    pub async fn version(&self, timeout: Duration) -> Result<VersionResponse> {
        self.call(VERSION, VersionRequest { version: "v1".into() }, timeout)
            .await
            .map_err(|s| status_error(&self.socket, "Version", &s))
    }

    /// The image's id when the runtime has it.
    pub async fn present(&self, image: &str, timeout: Duration) -> Result<Option<Image>, tonic::Status> {
        let req = ImageStatusRequest { image: Some(ImageSpec { image: image.into() }), verbose: false };
        let resp: ImageStatusResponse = self.call(STATUS, req, timeout).await?;
        Ok(resp.image.filter(|i| !i.id.is_empty()))
    }

    /// Pulls the image; the reference the runtime stored it under.
    pub async fn pull(&self, image: &str, timeout: Duration) -> Result<String, tonic::Status> {
        let req = PullImageRequest { image: Some(ImageSpec { image: image.into() }) };
        let resp: PullImageResponse = self.call(PULL, req, timeout).await?;
        Ok(resp.image_ref)
    }
}

/// A CRI error as the operator reads it: the call, the socket, gRPC's code
/// and the runtime's own message.
pub fn status_error(socket: &Path, call: &str, s: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{call} on {}: {:?}: {}", socket.display(), s.code(), s.message())
}
