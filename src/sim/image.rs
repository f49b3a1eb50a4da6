//! Crash images: every state the disk could be in after a power cut, or one
//! of them chosen by a number.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::state::{Dir, Entry, Inode, State};
use super::{MAX_EXHAUSTIVE_SECTORS, SECTOR, SimFs};

impl SimFs {
    /// How many images [`for_each_crash_image`](SimFs::for_each_crash_image)
    /// would produce.
    ///
    /// # Examples
    ///
    /// ```
    /// let fs = safestash::sim::SimFs::new();
    /// assert_eq!(fs.crash_image_count(), 1); // nothing pending: one image
    /// ```
    pub fn crash_image_count(&self) -> u64 {
        let s = self.lock().clone();
        let pending = pending_dirs(&s);
        let limits: Vec<usize> = pending.iter().map(|(_, n)| n + 1).collect();
        let mut cache = BTreeMap::new();
        let mut total = 0u64;
        for_each_combination(&limits, |prefixes| {
            let (_, dirty) = dir_image(&s, &pending, prefixes, &mut cache);
            let product =
                dirty.iter().map(|i| cache[i].len() as u64).fold(1u64, u64::saturating_mul);
            total = total.saturating_add(product);
        });
        total
    }

    /// Calls `f` with every state the disk could be in if the power were cut
    /// now, each as a fresh filesystem with no faults, no locks and every
    /// byte durable.
    ///
    /// # Examples
    ///
    /// See the [module documentation](super).
    pub fn for_each_crash_image(&self, mut f: impl FnMut(SimFs)) {
        self.enumerate(|state| f(SimFs { state: Arc::new(Mutex::new(state)) }));
    }

    /// One crash image chosen by `n`: each choice (how many pending
    /// operations each directory keeps, which variant each unsynced file
    /// takes) is drawn from a mix of `n`, so every image is reachable and
    /// nearby numbers give unrelated images. Costs one image, not all of
    /// them: use it where [`for_each_crash_image`](SimFs::for_each_crash_image)
    /// would be too many.
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{fs::Fs, sim::SimFs};
    /// let fs = SimFs::new();
    /// fs.create_dir("/d".as_ref())?; // pending: the image may or may not have it
    /// let seen: std::collections::BTreeSet<bool> =
    ///     (0..20).map(|n| fs.crash_image(n).list("/").is_empty()).collect();
    /// assert_eq!(seen.len(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn crash_image(&self, n: u64) -> SimFs {
        let s = self.lock().clone();
        let pending = pending_dirs(&s);
        sample_image(&s, &pending, &mut BTreeMap::new(), n)
    }

    /// Calls `f` with the crash images numbered `0..count`, each the image
    /// [`crash_image`](SimFs::crash_image) gives for that number, working
    /// out each unsynced file's variants once for all of them (for a sample
    /// of the images when there are too many to enumerate).
    ///
    /// # Examples
    ///
    /// ```
    /// use safestash::{fs::Fs, sim::SimFs};
    /// let fs = SimFs::new();
    /// fs.create_dir("/d".as_ref())?;
    /// let mut seen = Vec::new();
    /// fs.for_each_sampled_crash_image(20, |image| seen.push(image.list("/").is_empty()));
    /// let one_by_one: Vec<bool> = (0..20).map(|n| fs.crash_image(n).list("/").is_empty()).collect();
    /// assert_eq!(seen, one_by_one);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn for_each_sampled_crash_image(&self, count: u64, mut f: impl FnMut(SimFs)) {
        let s = self.lock().clone();
        let pending = pending_dirs(&s);
        let mut cache = BTreeMap::new();
        for n in 0..count {
            f(sample_image(&s, &pending, &mut cache, n));
        }
    }

    fn enumerate(&self, mut f: impl FnMut(State)) {
        let s = self.lock().clone();
        let pending = pending_dirs(&s);
        let limits: Vec<usize> = pending.iter().map(|(_, n)| n + 1).collect();
        let mut cache = BTreeMap::new();
        for_each_combination(&limits, |prefixes| {
            let (image, dirty) = dir_image(&s, &pending, prefixes, &mut cache);
            let counts: Vec<usize> = dirty.iter().map(|i| cache[i].len()).collect();
            for_each_combination(&counts, |choice| {
                let mut state = image.clone();
                for (inode, &c) in dirty.iter().zip(choice) {
                    let v = cache[inode][c].clone();
                    state.inodes[*inode] = Inode { durable: v.clone(), live: v };
                }
                f(state);
            });
        });
    }
}

/// The crash image numbered `n` (see [`SimFs::crash_image`]), with the
/// files' variants from (and added to) `cache`.
fn sample_image(
    s: &State,
    pending: &[(PathBuf, usize)],
    cache: &mut BTreeMap<usize, Vec<Vec<u8>>>,
    n: u64,
) -> SimFs {
    let mut mix = n;
    let mut draw = |limit: usize| -> usize {
        // splitmix64: every draw is a fresh, well-spread number.
        mix = mix.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = mix;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % limit as u64) as usize
    };
    let prefixes: Vec<usize> = pending.iter().map(|(_, n)| draw(n + 1)).collect();
    let (mut image, dirty) = dir_image(s, pending, &prefixes, cache);
    for inode in dirty {
        let variants = &cache[&inode];
        let v = variants[draw(variants.len())].clone();
        image.inodes[inode] = Inode { durable: v.clone(), live: v };
    }
    SimFs { state: Arc::new(Mutex::new(image)) }
}

/// Every directory with pending operations, and how many.
fn pending_dirs(s: &State) -> Vec<(PathBuf, usize)> {
    s.dirs
        .iter()
        .filter(|(_, d)| !d.pending.is_empty())
        .map(|(p, d)| (p.clone(), d.pending.len()))
        .collect()
}

/// The directory tree after a crash in which each directory in `pending`
/// kept the matching prefix of its pending operations, with only the
/// directories still reachable from the root; and the unsynced files it
/// holds, whose variants are computed into `cache`.
fn dir_image(
    s: &State,
    pending: &[(PathBuf, usize)],
    prefixes: &[usize],
    cache: &mut BTreeMap<usize, Vec<Vec<u8>>>,
) -> (State, Vec<usize>) {
    let mut image = State::new();
    image.next_name = s.next_name;
    image.inodes = s.inodes.clone();
    image.dirs.clear();
    for (path, dir) in &s.dirs {
        let mut entries = dir.durable.clone();
        if let Some(i) = pending.iter().position(|(p, _)| p == path) {
            dir.pending[..prefixes[i]].iter().for_each(|op| op.apply(&mut entries));
        }
        image.dirs.insert(
            path.clone(),
            Dir { durable: entries.clone(), live: entries, pending: Vec::new() },
        );
    }
    let reachable: BTreeSet<PathBuf> =
        image.dirs.keys().filter(|p| reachable(&image.dirs, p)).cloned().collect();
    image.dirs.retain(|p, _| reachable.contains(p));
    let files: BTreeSet<usize> = image
        .dirs
        .values()
        .flat_map(|d| d.live.values())
        .filter_map(|e| match e {
            Entry::File(i) => Some(*i),
            Entry::Dir => None,
        })
        .collect();
    let dirty: Vec<usize> =
        files.into_iter().filter(|&i| s.inodes[i].durable != s.inodes[i].live).collect();
    for &i in &dirty {
        cache.entry(i).or_insert_with(|| file_variants(&s.inodes[i]));
    }
    (image, dirty)
}

fn reachable(dirs: &BTreeMap<PathBuf, Dir>, path: &Path) -> bool {
    let mut cur = path;
    while let (Some(parent), Some(name)) = (cur.parent(), cur.file_name()) {
        match dirs.get(parent) {
            Some(d) if d.live.get(name) == Some(&Entry::Dir) => cur = parent,
            _ => return false,
        }
    }
    cur == Path::new("/")
}

/// Calls `f` with every vector `v` where `v[i] < limits[i]`.
fn for_each_combination(limits: &[usize], mut f: impl FnMut(&[usize])) {
    if limits.contains(&0) {
        return;
    }
    let mut current = vec![0; limits.len()];
    loop {
        f(&current);
        let mut i = 0;
        loop {
            if i == limits.len() {
                return;
            }
            current[i] += 1;
            if current[i] < limits[i] {
                break;
            }
            current[i] = 0;
            i += 1;
        }
    }
}

/// What a sector holds after a crash.
#[derive(Clone, Copy)]
enum Sector {
    Kept,
    Dropped,
    Garbage,
}

/// Every content an unsynced file can have after a crash.
fn file_variants(inode: &Inode) -> Vec<Vec<u8>> {
    let (old, new) = (&inode.durable, &inode.live);
    let span = old.len().max(new.len());
    let sectors = span.div_ceil(SECTOR);
    let range = |i: usize, len: usize| (i * SECTOR).min(len)..((i + 1) * SECTOR).min(len);
    let dirty: Vec<usize> = (0..sectors)
        .filter(|&i| old.get(range(i, old.len())) != new.get(range(i, new.len())))
        .collect();
    let choices: Vec<Vec<Sector>> = if dirty.len() <= MAX_EXHAUSTIVE_SECTORS {
        let mut all = Vec::new();
        for_each_combination(&vec![3; dirty.len()], |c| {
            all.push(
                c.iter().map(|&x| [Sector::Kept, Sector::Dropped, Sector::Garbage][x]).collect(),
            );
        });
        all
    } else {
        // Representative: uniform choices, one odd sector, and every
        // kept-prefix/dropped-suffix split (a write that stopped part way).
        let n = dirty.len();
        let mut some =
            vec![vec![Sector::Kept; n], vec![Sector::Dropped; n], vec![Sector::Garbage; n]];
        for i in 0..n {
            for odd in [Sector::Dropped, Sector::Garbage] {
                let mut c = vec![Sector::Kept; n];
                c[i] = odd;
                some.push(c);
            }
            some.push((0..n).map(|j| if j < i { Sector::Kept } else { Sector::Dropped }).collect());
        }
        some
    };
    let mut sizes = vec![old.len(), new.len()];
    sizes.dedup();
    let mut out = Vec::with_capacity(choices.len() * sizes.len());
    for choice in &choices {
        let mut bytes = vec![0u8; span];
        bytes[..old.len()].copy_from_slice(old);
        for i in 0..sectors {
            let r = range(i, span);
            let pick = dirty.iter().position(|&d| d == i).map_or(Sector::Kept, |j| choice[j]);
            match pick {
                Sector::Kept => {
                    for (k, b) in bytes[r.clone()].iter_mut().enumerate() {
                        *b = new.get(r.start + k).copied().unwrap_or(0);
                    }
                }
                Sector::Dropped => {}
                Sector::Garbage => {
                    for (k, b) in bytes[r.clone()].iter_mut().enumerate() {
                        *b = 0xA5 ^ (k as u8).wrapping_mul(31) ^ (i as u8);
                    }
                }
            }
        }
        for &size in &sizes {
            let mut v = bytes.clone();
            v.truncate(size);
            out.push(v);
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Write;
    use std::path::Path;

    use super::*;
    use crate::fs::Fs;

    #[test]
    fn unsynced_file_has_every_sector_variant() {
        let inode = Inode { durable: Vec::new(), live: vec![7; 2 * SECTOR + 10] };
        // 3 dirty sectors: 27 content choices x 2 sizes, fewer after dedup
        // (size 0 makes every choice the same empty file).
        let v = file_variants(&inode);
        assert_eq!(v.len(), 27 + 1);
        assert!(v.contains(&Vec::new()));
        assert!(v.contains(&inode.live));
    }

    #[test]
    fn pending_ops_are_kept_as_prefixes() {
        let fs = SimFs::new();
        fs.mkdir_durable("/d").unwrap();
        fs.write_durable("/d/a", b"A").unwrap();
        fs.remove_file(Path::new("/d/a")).unwrap();
        let (mut f, p) = fs.create_temp(Path::new("/d"), ".t.", ".tmp").unwrap();
        f.write_all(b"x").unwrap();
        fs.sync_file(&mut f).unwrap();
        fs.rename(&p, Path::new("/d/b")).unwrap();
        let mut seen = BTreeSet::new();
        fs.for_each_crash_image(|img| {
            seen.insert(img.list("/d"));
        });
        // remove a; create temp; rename temp -> b: four prefixes.
        let want: BTreeSet<Vec<String>> = [
            vec!["a".to_owned()],
            vec![],
            vec![p.file_name().unwrap().to_string_lossy().into_owned()],
            vec!["b".to_owned()],
        ]
        .into();
        assert_eq!(seen, want);
    }

    /// Regression (fuzz target store_ops, a timeout): with many unsynced
    /// files, picking one crash image must not enumerate their product.
    #[test]
    fn one_crash_image_among_astronomically_many_is_cheap() {
        let fs = SimFs::new();
        fs.mkdir_durable("/d").unwrap();
        for _ in 0..12 {
            let (mut f, _) = fs.create_temp(Path::new("/d"), ".t.", ".tmp").unwrap();
            f.write_all(&[b'x'; 3 * SECTOR]).unwrap();
        }
        assert!(fs.crash_image_count() > 10u64.pow(15)); // far too many to list
        let a = fs.crash_image(1);
        let b = fs.crash_image(2);
        assert!(a.list("/d").len() <= 12 && b.list("/d").len() <= 12);
    }
}
