//! Helpers the unit tests share.

use std::sync::Arc;

use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// Bytes that do not compress or repeat (xorshift), the same for a seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a test sees, or holds up, of the requests a `Tapped` store gets.
#[async_trait::async_trait]
pub trait Tap: std::fmt::Debug + Send + Sync + 'static {
    /// Before a (single-request) put of `location` goes through; it may
    /// hold the put up.
    async fn put(&self, _location: &ObjectPath) {}
    /// Before a read (or HEAD: `options.head`) of `location`; it may hold
    /// the read up.
    async fn get(&self, _location: &ObjectPath, _options: &GetOptions) {}
    /// Before a part of a multipart upload to `location` is acknowledged
    /// (the part is on its way); it may hold the acknowledgement up.
    async fn part(&self, _location: &ObjectPath) {}
    /// Before a listing of `prefix` is made; it may hold the listing up.
    async fn list(&self, _prefix: Option<&ObjectPath>) {}
    /// A read's answer on its way back; it may change the body (hold it
    /// up part way, cut it short).
    fn answer(&self, _location: &ObjectPath, result: GetResult) -> GetResult {
        result
    }
}

/// A store that passes every request on to `inner`, showing puts and
/// reads to `tap` first: a real store with a test's eyes on it, for the
/// requests a mode makes and the races between modes.
#[derive(Debug)]
pub struct Tapped<T> {
    pub inner: Arc<dyn ObjectStore>,
    pub tap: Arc<T>,
}

impl<T> std::fmt::Display for Tapped<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tapped({})", self.inner)
    }
}

#[async_trait::async_trait]
impl<T: Tap> ObjectStore for Tapped<T> {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.tap.put(location).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(TappedUpload {
            inner,
            tap: Arc::clone(&self.tap),
            location: location.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.tap.get(location, &options).await;
        let result = self.inner.get_opts(location, options).await?;
        Ok(self.tap.answer(location, result))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        use futures::StreamExt;
        let (tap, inner, prefix) = (
            Arc::clone(&self.tap),
            Arc::clone(&self.inner),
            prefix.cloned(),
        );
        futures::stream::once(async move {
            tap.list(prefix.as_ref()).await;
            inner.list(prefix.as_ref())
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload of a `Tapped` store: each part shown to the tap.
#[derive(Debug)]
struct TappedUpload<T> {
    inner: Box<dyn MultipartUpload>,
    tap: Arc<T>,
    location: ObjectPath,
}

#[async_trait::async_trait]
impl<T: Tap> MultipartUpload for TappedUpload<T> {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let tap = Arc::clone(&self.tap);
        let location = self.location.clone();
        let part = self.inner.put_part(data);
        Box::pin(async move {
            tap.part(&location).await;
            part.await
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}
