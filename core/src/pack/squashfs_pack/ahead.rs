//! Compressing ahead: backhand compresses one block at a time on the calling thread. To use
//! every core as mksquashfs does, a reader thread here predicts the blocks backhand will compress
//! (its rules: every block of a file of at least one block, all-zero blocks excepted; smaller
//! files packed into shared fragment blocks) and a thread pool compresses them ahead. backhand's
//! compressor takes a result only when the bytes it is asked to compress equal the predicted
//! bytes, and compresses inline otherwise: a wrong prediction costs time, never changes the
//! image.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use backhand::compression::{CompressionAction, Compressor, DefaultCompressor, Lz4, Zstd};
use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemCompressor, SuperBlock};

use super::image::Image;
use super::walk::{open_regular, read_full, Content};
use super::Compression;

/// The compressor and its settings, as both backhand's calls and the pool's workers use it.
#[derive(Clone, Copy)]
pub(super) struct Codec {
    compression: Compression,
    block_size: u32,
}

thread_local! {
    /// One compression context per thread and compressor, reused from block to block.
    static ZSTD: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DEFLATE: RefCell<Option<flate2::Compress>> = const { RefCell::new(None) };
}

impl Codec {
    pub(super) fn new(compression: Compression, block_size: u32) -> Self {
        Self {
            compression,
            block_size,
        }
    }

    /// backhand's description of it, written into the image's compression options.
    pub(super) fn filesystem_compressor(self) -> Result<FilesystemCompressor, BackhandError> {
        use backhand::compression::CompressionOptions;
        let options = match self.compression {
            Compression::Zstd => Some(CompressionOptions::Zstd(Zstd {
                compression_level: self.compression.level(),
            })),
            // The kernel requires lz4's options: version 1 (legacy framing), no flags.
            Compression::Lz4 => Some(CompressionOptions::Lz4(Lz4 {
                version: 1,
                flags: 0,
            })),
            // Their defaults (dictionary of one block, level 9 and window 15) need no options.
            Compression::Xz | Compression::Gzip => None,
        };
        FilesystemCompressor::new(self.compression.backhand(), options)
    }

    fn compress(self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let level = self.compression.level();
        match self.compression {
            Compression::Zstd => ZSTD.with(|cell| {
                let mut cell = cell.borrow_mut();
                let compressor = match &mut *cell {
                    Some(compressor) => compressor,
                    None => cell.insert(zstd::bulk::Compressor::new(level as i32)?),
                };
                compressor.compress(bytes)
            }),
            Compression::Xz => {
                let mut options = liblzma::stream::LzmaOptions::new_preset(level)?;
                options.dict_size(self.block_size);
                let mut filters = liblzma::stream::Filters::new();
                filters.lzma2(&options);
                let mut stream = liblzma::stream::Stream::new_stream_encoder(
                    &filters,
                    liblzma::stream::Check::Crc32,
                )?;
                let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8 + 128);
                loop {
                    let consumed = stream.total_in() as usize;
                    match stream.process_vec(
                        &bytes[consumed..],
                        &mut out,
                        liblzma::stream::Action::Finish,
                    )? {
                        liblzma::stream::Status::StreamEnd => return Ok(out),
                        _ => out.reserve(out.capacity().max(4096)),
                    }
                }
            }
            Compression::Gzip => DEFLATE.with(|cell| {
                let mut cell = cell.borrow_mut();
                let deflate = cell.get_or_insert_with(|| {
                    flate2::Compress::new(flate2::Compression::new(level), true)
                });
                deflate.reset();
                let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8 + 64);
                loop {
                    let consumed = deflate.total_in() as usize;
                    match deflate
                        .compress_vec(&bytes[consumed..], &mut out, flate2::FlushCompress::Finish)
                        .map_err(io::Error::other)?
                    {
                        flate2::Status::StreamEnd => return Ok(out),
                        _ => out.reserve(out.capacity().max(4096)),
                    }
                }
            }),
            Compression::Lz4 => {
                let fs_compressor = self.filesystem_compressor().map_err(io::Error::from)?;
                DefaultCompressor
                    .compress(bytes, fs_compressor, self.block_size)
                    .map_err(io::Error::from)
            }
        }
    }
}

/// The compressor backhand calls: it takes predicted results where the bytes match.
pub(super) struct AheadCompressor;

pub(super) static AHEAD_COMPRESSOR: AheadCompressor = AheadCompressor;

thread_local! {
    /// The pack running on this thread, if any: backhand writes on the thread that calls it.
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// The codec of the pack running on this thread, its predicted blocks, and counts of how
/// blocks were compressed.
pub(super) struct Active {
    codec: Codec,
    predicted: Option<Receiver<Predicted>>,
    stats: AheadStats,
}

#[derive(Clone, Copy, Default)]
pub(super) struct AheadStats {
    pub(super) ahead: u64,
    pub(super) missed: u64,
    pub(super) inline: u64,
}

/// Uninstalls the pack from its thread when dropped (also when backhand panics).
pub(super) struct ActiveGuard;

impl Active {
    pub(super) fn install(codec: Codec, predicted: Option<Receiver<Predicted>>) -> ActiveGuard {
        let active = Active {
            codec,
            predicted,
            stats: AheadStats::default(),
        };
        ACTIVE.with(|cell| *cell.borrow_mut() = Some(active));
        ActiveGuard
    }

    fn compress(&mut self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        if let Some(predicted) = &self.predicted {
            match predicted.recv() {
                Ok(block) if *block.input == *bytes => {
                    if let Ok(result) = block.output.recv() {
                        self.stats.ahead += 1;
                        return result;
                    }
                }
                Ok(_) => {}
                // Every predicted block was taken: what comes now is metadata.
                Err(_) => self.predicted = None,
            }
            if self.predicted.is_some() {
                self.stats.missed += 1;
                return self.codec.compress(bytes);
            }
        }
        self.stats.inline += 1;
        self.codec.compress(bytes)
    }
}

impl ActiveGuard {
    /// Uninstalls the pack; returns its counts. Dropping the predictions stops their thread.
    pub(super) fn uninstall(self) -> AheadStats {
        ACTIVE.with(|cell| {
            cell.borrow_mut()
                .take()
                .map(|a| a.stats)
                .unwrap_or_default()
        })
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.with(|cell| cell.borrow_mut().take());
    }
}

impl CompressionAction for AheadCompressor {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        compressor: Compressor,
    ) -> Result<(), BackhandError> {
        DefaultCompressor.decompress(bytes, out, compressor)
    }

    fn compress(
        &self,
        bytes: &[u8],
        fc: FilesystemCompressor,
        block_size: u32,
    ) -> Result<Vec<u8>, BackhandError> {
        ACTIVE.with(|cell| match &mut *cell.borrow_mut() {
            Some(active) => active.compress(bytes).map_err(BackhandError::StdIo),
            None => DefaultCompressor.compress(bytes, fc, block_size),
        })
    }

    fn compression_options(
        &self,
        superblock: &mut SuperBlock,
        kind: &Kind,
        fs_compressor: FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, BackhandError> {
        DefaultCompressor.compression_options(superblock, kind, fs_compressor)
    }
}

/// A block that backhand is predicted to compress, and its result when a worker has it.
pub(super) struct Predicted {
    input: Arc<Vec<u8>>,
    output: Receiver<io::Result<Vec<u8>>>,
}

/// The reader thread that predicts backhand's blocks and hands them to the pool.
pub(super) struct Prediction;

impl Prediction {
    /// Starts predicting in `scope`; the receiver yields the blocks in backhand's order. The
    /// thread stops when the receiver is dropped.
    pub(super) fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        image: &'scope Image<'scope>,
        codec: Codec,
    ) -> Receiver<Predicted> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (sender, receiver) = mpsc::sync_channel(4 * threads);
        scope.spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("sqfs-compress-{i}"))
                .build();
            match pool {
                Ok(pool) => Self::run(image, codec, &pool, &sender),
                // Then every block is compressed by backhand's own calls, on one thread.
                Err(e) => tracing::debug!("no compression threads: {e}"),
            }
        });
        receiver
    }

    /// backhand's data writer in outline: the same blocks in the same order, compressed on the
    /// pool. Stops early, without harm, at any surprise.
    fn run(image: &Image, codec: Codec, pool: &rayon::ThreadPool, out: &SyncSender<Predicted>) {
        let block = codec.block_size as usize;
        let emit = |input: Vec<u8>| {
            let input = Arc::new(input);
            let (done, output) = mpsc::sync_channel(1);
            let job = Arc::clone(&input);
            pool.spawn(move || {
                let _ = done.send(codec.compress(&job));
            });
            out.send(Predicted { input, output }).is_ok()
        };
        let mut fragment = Vec::with_capacity(block);
        let mut buf = vec![0; block];
        let files = image
            .walk
            .nodes
            .iter()
            .filter(|node| matches!(node.content, Content::File));
        for node in files {
            if image.cancel.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut file) = open_regular(image.top, &node.rel) else {
                return;
            };
            let Ok(mut len) = read_full(&mut file, &mut buf) else {
                return;
            };
            if len == 0 {
                continue;
            }
            if len < block {
                if len + fragment.len() > block
                    && !emit(std::mem::replace(&mut fragment, Vec::with_capacity(block)))
                {
                    return;
                }
                fragment.extend_from_slice(&buf[..len]);
                continue;
            }
            while len > 0 {
                let chunk = &buf[..len];
                // backhand stores an all-zero block as a hole, without compressing it.
                if chunk.iter().any(|&b| b != 0) && !emit(chunk.to_vec()) {
                    return;
                }
                len = match read_full(&mut file, &mut buf) {
                    Ok(len) => len,
                    Err(_) => return,
                };
            }
        }
        // backhand compresses the last fragment block at the end, even an empty one.
        emit(fragment);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use rustix::fs::{Mode, OFlags};

    use super::*;
    use crate::pack::squashfs_pack::walk::Walker;

    /// A tree with small files sharing fragments, files of several blocks, a hole, a duplicate
    /// and an empty file: every path of backhand's data writer.
    fn sample_tree(root: &Path) {
        let write = |rel: &str, data: &[u8]| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        };
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 7) as u8 + b'a'
                })
                .collect()
        };
        for i in 0..40 {
            write(
                &format!("cat-{}/pkg/pkg-{i}.ebuild", i % 3),
                &noise(900 + i * 97),
            );
        }
        write("big/one", &noise(3 * 4096 + 100));
        write("big/two", &noise(4096));
        let mut holed = noise(4096);
        holed.extend_from_slice(&[0; 4096]);
        holed.extend(noise(10));
        write("big/holed", &holed);
        write("big/copy", &std::fs::read(root.join("big/one")).unwrap());
        write("empty", b"");
        std::os::unix::fs::symlink("big/one", root.join("link")).unwrap();
    }

    #[test]
    fn predicted_blocks_change_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        sample_tree(&tree);
        let cancel = AtomicBool::new(false);
        let top =
            rustix::fs::open(&tree, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        let walk = Walker::walk(&top, &tree, None, &cancel).unwrap();
        for compression in Compression::ALL {
            let image = Image {
                walk: &walk,
                top: top.as_fd(),
                shown: &tree,
                compression,
                block_size: 4096,
                time: 0,
                cancel: &cancel,
            };
            let mut images = Vec::new();
            for ahead in [true, false] {
                let out = tempfile::tempfile().unwrap();
                let Ok(written) = image.write(&out, ahead) else {
                    panic!("{compression}, ahead: {ahead}: the write failed");
                };
                if ahead {
                    // 40 small files in fragment blocks, 4 + 1 + 2 + 4 data blocks, the last
                    // fragment block.
                    assert!(
                        written.ahead >= 11 + 2,
                        "{compression}: {} ahead",
                        written.ahead
                    );
                    assert_eq!(written.missed, 0, "{compression}: mispredicted blocks");
                } else {
                    assert_eq!(written.ahead + written.missed, 0);
                }
                let mut bytes = Vec::new();
                std::io::Seek::rewind(&mut &out).unwrap();
                (&out).read_to_end(&mut bytes).unwrap();
                images.push(bytes);
            }
            assert!(
                images[0] == images[1],
                "{compression}: the same bytes either way"
            );
        }
    }
}
