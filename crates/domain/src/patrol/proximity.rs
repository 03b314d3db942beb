//! The patrol proximity index: where every on-duty officer is, bucketed by H3 cell, so a
//! citizen's "officers near me" is answered from the few cells around them instead of a scan
//! of every officer.
//!
//! How it fits: officers' position updates and citizens' queries both arrive on their own
//! WebSocket sessions; every session holds the same [`ProximityIndex`] and calls it directly
//! through `&self` (no actor hop), so it is pure (no tokio, no I/O) and synchronises inside
//! with [`DashMap`] shards.
//!
//! Layout: `cells` maps an H3 cell at one fixed resolution to the members in it; `ids` maps
//! a member to its cell and position so a move knows which bucket to leave. A query takes the
//! grid disk around its own cell that [`ProximityIndex::ring_for`] proves large enough, skips
//! buckets whose centre is too far, pre-filters members with a cheap spherical (haversine)
//! bound with a proven margin, and decides with the exact WGS84 geodesic
//! ([`Position::distance_m`]), so answers equal a brute-force geodesic search exactly.
//!
//! Lock discipline (no deadlock by construction): a writer may hold one `ids` shard guard
//! (the member's own entry) while it takes `cells` shard guards one at a time, never two at
//! once; readers take one `cells` guard at a time and never an `ids` guard while holding it.
//! So every thread acquires in the order `ids` → `cells`, and never two `cells` shards.
//! A move removes the member from its old bucket before adding it to the new one, and a
//! query reads one cell at a time: a query running at that instant may miss the moving
//! member, or meet it in both cells; results keep one entry per id, so it is never reported
//! twice.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use h3o::{CellIndex, LatLng, Resolution};

use crate::geo::position::EARTH_RADIUS_M;
use crate::geo::Position;

/// Lower bound of (WGS84 geodesic length) ÷ (spherical length on a sphere of radius
/// [`EARTH_RADIUS_M`]) for the same curve in (latitude, longitude). The ellipsoid's metric is
/// `M² dφ² + N² cos²φ dλ²` and the sphere's `R² dφ² + R² cos²φ dλ²`, so every tangent vector
/// (hence every curve, hence the shortest one) is stretched by a factor between
/// `min(M, N)/R` and `max(M, N)/R`: M ranges 6,335,439 m (equator) .. 6,399,594 m (poles)
/// and N 6,378,137 .. 6,399,594 m, giving 0.99442 .. 1.00449: a geodesic within r is
/// spherically within r / 0.99442. 0.99 leaves room for float rounding in both computations.
const GEODESIC_OVER_SPHERE_MIN: f64 = 0.99;
/// Upper bound of the same ratio (true bound 1.00449), used to keep only the members that
/// may be among the n closest.
const GEODESIC_OVER_SPHERE_MAX: f64 = 1.01;
/// Absolute slack added to spherical bounds, for rounding near zero distance.
const SLACK_M: f64 = 1.0;
/// Radius of H3's own sphere: edge lengths and cell shapes are measured on it.
const H3_EARTH_RADIUS_M: f64 = 6_371_007.180_918_475;
/// Longest geodesic on WGS84 is ≈ 20,003,931 m (half a meridian); anything larger reaches
/// every point, so a radius is clamped to this to keep the growing search finite.
const MAX_GEODESIC_M: f64 = 20_010_000.0;

/// Smallest spacing of H3 cells as a fraction of h3o's average edge length, with margin.
/// H3 cells are gnomonic projections of an icosahedron's faces: cells near the face centres
/// are about twice the area of those near its vertices, where the twelve pentagons sit and
/// the grid has a defect. On a plane of regular hexagons with edge e each ring adds 1.5·e of
/// guaranteed reach (see [`ProximityIndex::ring_for`]); measured on real cells (pentagons,
/// their neighbourhoods and random cells at resolutions 5–11, test
/// `ring_guarantee_holds_on_real_cells`) the worst ring adds ≈ 1.05 average edges, i.e. the
/// local edge is never below ≈ 0.7 of the average. 0.6 keeps ≈ 15 % in hand.
const MIN_EDGE_FRACTION: f64 = 0.6;
/// Largest distance from a cell's centre to any point of it, in average edges, with margin.
/// A regular hexagon's circumradius equals its edge; measured on the same cells the largest
/// is 1.10 average edges. 1.5 keeps ≈ 35 % in hand; it only costs a few more cells looked at.
const MAX_CIRCUMRADIUS_EDGES: f64 = 1.5;
/// First radius tried by [`ProximityIndex::nearest`], in average edges: in a dense city the
/// answer is already there, so most queries need one round.
const NEAREST_START_EDGES: f64 = 2.0;

/// One member found near a point: what a citizen's "officers near me" lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbour {
    /// The member's id, shared with the index (no copy of the string per answer).
    pub id: Arc<str>,
    /// Where the member last reported being.
    pub position: Position,
    /// Exact WGS84 geodesic distance from the query point, metres: what the answer is
    /// ordered by and what a client shows.
    pub distance_m: f64,
}

/// A point on the unit sphere kept with its cosine, so the haversine of a pair costs two
/// sines and one cosine.
#[derive(Debug, Clone, Copy)]
struct Spherical {
    lat: f64,
    lon: f64,
    cos_lat: f64,
}

impl Spherical {
    fn from_radians(lat: f64, lon: f64) -> Spherical {
        Spherical {
            lat,
            lon,
            cos_lat: lat.cos(),
        }
    }

    fn of(p: Position) -> Spherical {
        Spherical::from_radians(p.lat().to_radians(), p.lon().to_radians())
    }

    /// The haversine `sin²(θ/2)` of the central angle θ to `lat`/`lon` (radians). It grows
    /// monotonically with θ on 0..=π, so thresholds compare in this space without an `asin`.
    /// `sin²` of half the longitude difference has period 2π, so the anti-meridian needs no
    /// special case.
    fn haversine_to(&self, lat: f64, cos_lat: f64, lon: f64) -> f64 {
        let s_lat = ((lat - self.lat) * 0.5).sin();
        let s_lon = ((lon - self.lon) * 0.5).sin();
        s_lat * s_lat + self.cos_lat * cos_lat * s_lon * s_lon
    }
}

/// The haversine of a central angle, saturating at π (every point is within π).
fn haversine_of_angle(theta: f64) -> f64 {
    if theta >= std::f64::consts::PI {
        // Slightly above 1 so rounding in a computed haversine of 1 still passes.
        return 1.5;
    }
    let s = (theta.max(0.0) * 0.5).sin();
    s * s
}

/// The latitude/longitude box around a spherical cap, in the fixed-point units positions
/// are stored in: rejects most members outside the cap with integer comparisons, before any
/// trigonometry (which is what a query spends most of its time on otherwise).
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lat_e7: i64,
    lon_e7: i64,
    /// Largest latitude difference inside the cap (its angular radius), rounded up.
    dlat_e7: i64,
    /// Largest longitude difference inside the cap, rounded up; `None` when the cap holds a
    /// pole (every longitude is then possible).
    dlon_e7: Option<i64>,
}

impl Bounds {
    /// The box around the cap of angular radius `theta` (radians) centred on `at`.
    fn around(at: Position, theta: f64) -> Bounds {
        let to_e7 = |rad: f64| (rad.to_degrees() * 1e7 * (1.0 + 1e-9)).ceil() as i64 + 2;
        let phi = at.lat().to_radians();
        let half_pi = std::f64::consts::FRAC_PI_2;
        // A cap not reaching a pole spans asin(sin θ / cos φ) of longitude either side
        // (the tangent meridians); a small angular margin covers rounding near the limit.
        let dlon_e7 = (theta < half_pi && phi.abs() + theta < half_pi - 1e-9).then(|| {
            let ratio = (theta.sin() / phi.cos()).min(1.0);
            to_e7(ratio.asin())
        });
        Bounds {
            lat_e7: i64::from(at.lat_e7),
            lon_e7: i64::from(at.lon_e7),
            dlat_e7: to_e7(theta.min(std::f64::consts::PI)),
            dlon_e7,
        }
    }

    /// [`Bounds::may_contain`] for a point in radians (a bucket's centre), with a unit of
    /// margin for the rounding.
    fn may_contain_radians(&self, lat: f64, lon: f64) -> bool {
        self.may_contain_e7(
            (lat.to_degrees() * 1e7) as i64,
            (lon.to_degrees() * 1e7) as i64,
            2,
        )
    }

    /// False only for positions certainly outside the cap.
    fn may_contain(&self, p: Position) -> bool {
        self.may_contain_e7(i64::from(p.lat_e7), i64::from(p.lon_e7), 0)
    }

    fn may_contain_e7(&self, lat_e7: i64, lon_e7: i64, margin: i64) -> bool {
        if (lat_e7 - self.lat_e7).abs() > self.dlat_e7 + margin {
            return false;
        }
        match self.dlon_e7 {
            None => true,
            Some(limit) => {
                let d = (lon_e7 - self.lon_e7).abs();
                // The short way round, across the anti-meridian.
                d.min(3_600_000_000 - d) <= limit + margin
            }
        }
    }
}

/// Spherical distance in metres on a sphere of radius [`EARTH_RADIUS_M`] from a haversine.
fn metres_of_haversine(h: f64) -> f64 {
    2.0 * EARTH_RADIUS_M * h.clamp(0.0, 1.0).sqrt().asin()
}

/// Hasher for H3 cell keys: a cell index is already a well-spread 64-bit value, so a
/// splitmix64 finaliser is enough and far cheaper than SipHash. Keys are cells of positions,
/// never attacker-chosen strings; member ids keep the default SipHash.
#[derive(Default)]
struct CellHasher(u64);

impl Hasher for CellHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// The members in one cell, with the cell's centre so a query can skip the whole cell
/// without touching its members.
#[derive(Debug)]
struct Bucket {
    centre: Spherical,
    members: Vec<(Arc<str>, Position)>,
}

/// A member found by the spherical pre-filter, waiting for the exact distance.
struct Candidate {
    id: Arc<str>,
    position: Position,
    spherical_m: f64,
}

/// Where on-duty members are, for "who is near this point" queries shared by every session.
pub struct ProximityIndex {
    /// The H3 resolution of `cells`: chosen so a typical query covers a handful of cells.
    resolution: Resolution,
    /// Members by cell; buckets are removed when they empty so memory follows the members.
    cells: DashMap<CellIndex, Bucket, BuildHasherDefault<CellHasher>>,
    /// Each member's cell and position, so a move finds the bucket to leave and `get` is O(1).
    ids: DashMap<Arc<str>, (CellIndex, Position)>,
    /// Grid-disk radius from which a disk is at least as many cells as the globe has.
    globe_ring: u32,
    /// Whether a query may walk every bucket when that is cheaper than the disk; always true
    /// outside tests, which turn it off to exercise the disk path on small member sets.
    scan_when_cheaper: bool,
}

impl std::fmt::Debug for ProximityIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProximityIndex")
            .field("resolution", &u8::from(self.resolution))
            .field("members", &self.ids.len())
            .field("cells", &self.cells.len())
            .finish()
    }
}

/// Number of cells in a grid disk of radius `k` on a plane of hexagons (pentagons only make
/// it smaller).
fn disk_size(k: u32) -> u64 {
    let k = u64::from(k);
    3 * k * (k + 1) + 1
}

impl ProximityIndex {
    /// An empty index bucketing by H3 cells at `resolution` (0..=15; 9, ≈ 200 m edges, suits
    /// a city).
    pub fn new(resolution: u8) -> Result<ProximityIndex, String> {
        let res = Resolution::try_from(resolution)
            .map_err(|_| format!("resolution {resolution} is outside 0..=15"))?;
        let cells = res.cell_count();
        // Start just below √(cells / 3) (disk_size ≈ 3k²) rather than count up from 0,
        // which would be 14 million steps at resolution 15.
        let mut globe_ring = ((cells as f64 / 3.0).sqrt() as u32).saturating_sub(2);
        while disk_size(globe_ring) < cells {
            globe_ring += 1;
        }
        Ok(ProximityIndex {
            resolution: res,
            cells: DashMap::with_hasher(BuildHasherDefault::default()),
            ids: DashMap::new(),
            globe_ring,
            scan_when_cheaper: true,
        })
    }

    /// The H3 resolution the index buckets by.
    pub fn resolution(&self) -> u8 {
        u8::from(self.resolution)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index has no member.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The member's last position.
    pub fn get(&self, id: &str) -> Option<Position> {
        self.ids.get(id).map(|slot| slot.1)
    }

    fn cell_of(&self, at: Position) -> Option<CellIndex> {
        let at = at.validate().ok()?;
        LatLng::new(at.lat(), at.lon())
            .ok()
            .map(|ll| ll.to_cell(self.resolution))
    }

    /// Inserts a member or moves it; returns true when it was new or changed cell (what a
    /// caller uses to refresh cell-scoped subscriptions). A position outside the globe's
    /// ranges (positions are validated where they enter, so only a bug sends one) changes
    /// nothing and returns false.
    pub fn upsert(&self, id: &str, at: Position) -> bool {
        let Some(cell) = self.cell_of(at) else {
            return false;
        };
        // The common case, a known member, takes its entry without allocating a key.
        if let Some(mut slot) = self.ids.get_mut(id) {
            let key = Arc::clone(slot.key());
            let old = slot.0;
            *slot = (cell, at);
            // The entry's guard stays held while the buckets change: no other writer can
            // move or remove this member meanwhile.
            let changed = self.relocate(&key, Some(old), cell, at);
            drop(slot);
            return changed;
        }
        match self.ids.entry(Arc::from(id)) {
            // Inserted by another thread between the two looks: a move after all.
            Entry::Occupied(mut slot) => {
                let key = Arc::clone(slot.key());
                let old = slot.get().0;
                slot.insert((cell, at));
                self.relocate(&key, Some(old), cell, at)
            }
            Entry::Vacant(slot) => {
                let key = Arc::clone(slot.key());
                self.relocate(&key, None, cell, at);
                slot.insert((cell, at));
                true
            }
        }
    }

    /// Puts `key` at `at` in `cell`, leaving `old` first. Called with the member's `ids` entry
    /// held; takes one `cells` guard at a time.
    fn relocate(
        &self,
        key: &Arc<str>,
        old: Option<CellIndex>,
        cell: CellIndex,
        at: Position,
    ) -> bool {
        if old == Some(cell) {
            if let Some(mut bucket) = self.cells.get_mut(&cell) {
                if let Some(member) = bucket.members.iter_mut().find(|m| Arc::ptr_eq(&m.0, key)) {
                    member.1 = at;
                    return false;
                }
            }
            // Not reachable while the lock discipline holds; re-adding keeps the index whole.
            self.add_to(cell, key, at);
            return false;
        }
        if let Some(old) = old {
            self.take_from(old, key);
        }
        self.add_to(cell, key, at);
        true
    }

    fn add_to(&self, cell: CellIndex, key: &Arc<str>, at: Position) {
        self.cells
            .entry(cell)
            .or_insert_with(|| {
                let centre = LatLng::from(cell);
                Bucket {
                    centre: Spherical::from_radians(centre.lat_radians(), centre.lng_radians()),
                    members: Vec::new(),
                }
            })
            .members
            .push((Arc::clone(key), at));
    }

    fn take_from(&self, cell: CellIndex, key: &Arc<str>) {
        let emptied = match self.cells.get_mut(&cell) {
            Some(mut bucket) => {
                if let Some(i) = bucket.members.iter().position(|m| Arc::ptr_eq(&m.0, key)) {
                    bucket.members.swap_remove(i);
                }
                bucket.members.is_empty()
            }
            None => false,
        };
        // The guard above is dropped: re-checked under the removal's own lock, since another
        // member may have arrived in between.
        if emptied {
            self.cells
                .remove_if(&cell, |_, bucket| bucket.members.is_empty());
        }
    }

    /// Removes a member, returning its last position.
    pub fn remove(&self, id: &str) -> Option<Position> {
        // The bucket is left while the `ids` entry is still locked, so a concurrent upsert of
        // the same id cannot interleave with the removal.
        self.ids
            .remove_if(id, |key, slot| {
                self.take_from(slot.0, key);
                true
            })
            .map(|(_, slot)| slot.1)
    }

    /// Grid-disk radius k (in rings) around a point's cell that contains every point within
    /// `radius_m` (geodesic) of any point of that cell, at this resolution. Monotone in
    /// `radius_m`; capped at the radius from which a disk has as many cells as the globe
    /// (a query then scans every bucket instead).
    ///
    /// Why it is safe: on a plane of regular hexagons with edge e, the cells k+1 rings out
    /// have centres at least 1.5·e·(k+1) from the centre cell's centre (the middle of the
    /// rings' sides; corners are farther), so their points are at least 1.5·e·(k+1) − e away,
    /// and a point of the centre cell is within e of its centre: the disk reaches
    /// 1.5·e·(k+1) − 2·e from anywhere in the centre cell (exactly e for k = 1, which is
    /// tight). H3 cells are not uniform, so the spacing uses the smallest edge
    /// ([`MIN_EDGE_FRACTION`] of the average) and the two circumradii the largest
    /// ([`MAX_CIRCUMRADIUS_EDGES`]); the radius is first widened from the ellipsoid to H3's
    /// sphere ([`GEODESIC_OVER_SPHERE_MIN`]).
    pub fn ring_for(&self, radius_m: f64) -> u32 {
        let radius_m = if radius_m.is_nan() {
            0.0
        } else {
            radius_m.max(0.0)
        };
        let edge = self.resolution.edge_length_m();
        let spherical = radius_m / GEODESIC_OVER_SPHERE_MIN + SLACK_M;
        let reach = spherical + 2.0 * MAX_CIRCUMRADIUS_EDGES * edge;
        let k = (reach / (1.5 * MIN_EDGE_FRACTION * edge)).ceil() - 1.0;
        // `radius_m` is not NaN, so neither is k (an infinite radius gives an infinite k).
        if k >= f64::from(self.globe_ring) {
            return self.globe_ring;
        }
        // 0 < k < globe_ring ≤ u32::MAX here, so the cast is exact.
        (k as u32).max(1)
    }

    /// Members within `radius_m` (pre-filtered spherically with a safe margin), with their
    /// spherical distance. With `closest = Some(n)`, only members that may be among the n
    /// closest: a member whose geodesic lower bound exceeds the n-th smallest upper bound
    /// seen is left out (so a dense answer does not clone hundreds of ids). Takes one
    /// `cells` guard at a time.
    fn gather(&self, at: Position, radius_m: f64, closest: Option<usize>) -> Vec<Candidate> {
        let mut out = Vec::new();
        let Some(cell) = self.cell_of(at) else {
            return out;
        };
        let q = Spherical::of(at);
        let spherical_m = radius_m / GEODESIC_OVER_SPHERE_MIN + SLACK_M;
        let member_max = haversine_of_angle(spherical_m / EARTH_RADIUS_M);
        // A member within `spherical_m` of the query lies in a cell whose centre is at most
        // `spherical_m + circumradius` away (triangle inequality on the sphere).
        let circumradius = MAX_CIRCUMRADIUS_EDGES
            * self.resolution.edge_length_m()
            * (EARTH_RADIUS_M / H3_EARTH_RADIUS_M);
        let centre_max = haversine_of_angle((spherical_m + circumradius) / EARTH_RADIUS_M);
        let bounds = Bounds::around(at, spherical_m / EARTH_RADIUS_M);
        let centre_bounds = Bounds::around(at, (spherical_m + circumradius) / EARTH_RADIUS_M);
        // Max-heap of the n smallest geodesic upper bounds seen (bit patterns of
        // non-negative floats order like the floats).
        let mut uppers: std::collections::BinaryHeap<u64> = std::collections::BinaryHeap::new();
        let mut visit = |bucket: &Bucket| {
            let c = bucket.centre;
            if !centre_bounds.may_contain_radians(c.lat, c.lon)
                || q.haversine_to(c.lat, c.cos_lat, c.lon) > centre_max
            {
                return;
            }
            for (id, p) in &bucket.members {
                if !bounds.may_contain(*p) {
                    continue;
                }
                let m = Spherical::of(*p);
                let h = q.haversine_to(m.lat, m.cos_lat, m.lon);
                if h > member_max {
                    continue;
                }
                let spherical_m = metres_of_haversine(h);
                if let Some(n) = closest {
                    let threshold = match uppers.peek() {
                        Some(&top) if uppers.len() >= n => f64::from_bits(top),
                        _ => f64::INFINITY,
                    };
                    if spherical_m * GEODESIC_OVER_SPHERE_MIN - SLACK_M > threshold {
                        continue;
                    }
                    uppers.push((spherical_m * GEODESIC_OVER_SPHERE_MAX + SLACK_M).to_bits());
                    if uppers.len() > n {
                        uppers.pop();
                    }
                }
                out.push(Candidate {
                    id: Arc::clone(id),
                    position: *p,
                    spherical_m,
                });
            }
        };
        let k = self.ring_for(radius_m);
        if k >= self.globe_ring
            || (self.scan_when_cheaper && disk_size(k) >= self.cells.len() as u64)
        {
            // Fewer occupied buckets than disk cells: walking them all is cheaper, and for a
            // disk as large as the globe it is the only correct choice.
            for bucket in self.cells.iter() {
                visit(bucket.value());
            }
        } else {
            // The safe disk: h3o's `grid_disk` tries the fast walk and falls back to the
            // pentagon-safe one when the fast walk meets a pentagon.
            for c in cell.grid_disk::<Vec<_>>(k) {
                if let Some(bucket) = self.cells.get(&c) {
                    visit(bucket.value());
                }
            }
        }
        out
    }

    /// Every member whose exact geodesic distance from `at` is at most `radius_m`, ordered by
    /// (distance, id). A NaN or negative radius finds nothing.
    pub fn within(&self, at: Position, radius_m: f64) -> Vec<Neighbour> {
        if radius_m.is_nan() || radius_m < 0.0 {
            return Vec::new();
        }
        let mut found: Vec<Neighbour> = self
            .gather(at, radius_m.min(MAX_GEODESIC_M), None)
            .into_iter()
            .filter_map(|c| {
                let d = at.distance_m(c.position);
                (d <= radius_m).then_some(Neighbour {
                    id: c.id,
                    position: c.position,
                    distance_m: d,
                })
            })
            .collect();
        dedupe_ids(&mut found);
        sort_neighbours(&mut found);
        found
    }

    /// The `n` members closest to `at` within `max_radius_m`, ordered by (distance, id).
    /// Starts from a couple of cell edges and doubles the radius until `n` are found or the
    /// maximum is reached, so a dense city answers from a few cells. The exact geodesic is
    /// only computed for members the spherical bounds cannot rule out.
    pub fn nearest(&self, at: Position, n: usize, max_radius_m: f64) -> Vec<Neighbour> {
        if n == 0 || max_radius_m.is_nan() || max_radius_m < 0.0 {
            return Vec::new();
        }
        let max_radius_m = max_radius_m.min(MAX_GEODESIC_M);
        let mut radius_m =
            (NEAREST_START_EDGES * self.resolution.edge_length_m()).min(max_radius_m);
        loop {
            let mut candidates = self.gather(at, radius_m, Some(n));
            candidates.sort_unstable_by(|a, b| a.spherical_m.total_cmp(&b.spherical_m));
            let mut found: Vec<Neighbour> = Vec::new();
            // Distance of the n-th closest exact result so far (sorted `found` prefix).
            let mut nth = f64::INFINITY;
            for c in candidates {
                // Candidates come by spherical distance, so lower bounds only grow: once one
                // is strictly beyond the n-th exact distance, no later one can enter (nor tie).
                if c.spherical_m * GEODESIC_OVER_SPHERE_MIN - SLACK_M > nth {
                    break;
                }
                let d = at.distance_m(c.position);
                // A member moving between two cells while they are read can be met in both.
                if d <= radius_m && !found.iter().any(|f| f.id == c.id) {
                    found.push(Neighbour {
                        id: c.id,
                        position: c.position,
                        distance_m: d,
                    });
                    // Trimmed back to n at n and then every time it doubles, so a large n
                    // does not sort per candidate; a stale n-th is larger, so still safe.
                    if found.len() == n || found.len() >= 2 * n {
                        sort_neighbours(&mut found);
                        found.truncate(n);
                        nth = found[n - 1].distance_m;
                    }
                }
            }
            // With n found within the radius, nobody outside it can be closer. Otherwise every
            // candidate was measured, so `found` is everyone within the radius.
            if found.len() >= n || radius_m >= max_radius_m || found.len() >= self.len() {
                sort_neighbours(&mut found);
                found.truncate(n);
                return found;
            }
            radius_m = (radius_m * 2.0).min(max_radius_m);
        }
    }
}

/// Keeps one entry per id (the closer): a member that moves from a cell the query already
/// read into one it reads next is met twice.
fn dedupe_ids(found: &mut Vec<Neighbour>) {
    found.sort_unstable_by(|a, b| a.id.cmp(&b.id).then(a.distance_m.total_cmp(&b.distance_m)));
    found.dedup_by(|later, kept| later.id == kept.id);
}

fn sort_neighbours(found: &mut [Neighbour]) {
    found.sort_unstable_by(|a, b| {
        a.distance_m
            .total_cmp(&b.distance_m)
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Initial great-circle bearing from `from` to `to`, degrees in 0..360 (0 = north,
/// 90 = east): the direction a citizen's app points an arrow to the officer. From a pole,
/// where every direction is south (north), 180 (0) by convention; to a pole, exactly 0
/// (180); to the same point, 0. Across the anti-meridian the short way round is meant.
pub fn bearing_deg(from: Position, to: Position) -> f64 {
    if from.lat_e7 >= 900_000_000 {
        return 180.0;
    }
    if from.lat_e7 <= -900_000_000 {
        return 0.0;
    }
    // Exactly due north or south, without the rounding that would give 359.999… for north.
    if to.lat_e7 >= 900_000_000 {
        return 0.0;
    }
    if to.lat_e7 <= -900_000_000 {
        return 180.0;
    }
    let (phi1, phi2) = (from.lat().to_radians(), to.lat().to_radians());
    let dl = (to.lon() - from.lon()).to_radians();
    let y = dl.sin() * phi2.cos();
    let x = phi1.cos() * phi2.sin() - phi1.sin() * phi2.cos() * dl.cos();
    let deg = y.atan2(x).to_degrees().rem_euclid(360.0) + 0.0;
    // rem_euclid of a tiny negative angle rounds to 360.0 itself.
    if deg >= 360.0 {
        0.0
    } else {
        deg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pos(lat: f64, lon: f64) -> Position {
        Position::from_degrees(lat, lon).unwrap()
    }

    /// The point `dist_m` from (lat, lon) along `bearing` on the sphere, longitude wrapped
    /// into -180..=180 and latitude folded over a pole: scatters test points across the
    /// anti-meridian and around the poles.
    fn destination(lat: f64, lon: f64, dist_m: f64, bearing: f64) -> Position {
        let (phi1, l1, b) = (lat.to_radians(), lon.to_radians(), bearing.to_radians());
        let d = dist_m / EARTH_RADIUS_M;
        let phi2 = (phi1.sin() * d.cos() + phi1.cos() * d.sin() * b.cos())
            .clamp(-1.0, 1.0)
            .asin();
        let l2 = l1 + (b.sin() * d.sin() * phi1.cos()).atan2(d.cos() - phi1.sin() * phi2.sin());
        let lon2 = (l2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
        pos(
            phi2.to_degrees().clamp(-90.0, 90.0),
            lon2.clamp(-180.0, 180.0),
        )
    }

    fn brute_within(members: &[(String, Position)], at: Position, r: f64) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = members
            .iter()
            .map(|(id, p)| (id.clone(), at.distance_m(*p)))
            .filter(|(_, d)| *d <= r)
            .collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    fn plain(found: &[Neighbour]) -> Vec<(String, f64)> {
        found
            .iter()
            .map(|n| (n.id.to_string(), n.distance_m))
            .collect()
    }

    #[test]
    fn resolution_outside_range_is_refused_by_value() {
        let err = ProximityIndex::new(16).unwrap_err();
        assert!(err.contains("16"), "{err}");
        assert_eq!(ProximityIndex::new(9).unwrap().resolution(), 9);
        assert!(ProximityIndex::new(0).is_ok());
        assert!(ProximityIndex::new(15).is_ok());
    }

    #[test]
    fn upsert_move_remove() {
        let index = ProximityIndex::new(9).unwrap();
        assert!(index.is_empty());
        let a = pos(48.8566, 2.3522);
        assert!(index.upsert("a", a), "a new member counts as a cell change");
        assert_eq!(index.get("a"), Some(a));
        assert_eq!(index.len(), 1);
        // A metre away stays in the cell (the centre of the cell, to be sure).
        let centre = LatLng::from(
            LatLng::new(a.lat(), a.lon())
                .unwrap()
                .to_cell(Resolution::Nine),
        );
        let c = pos(centre.lat(), centre.lng());
        index.upsert("a", c);
        let c2 = pos(centre.lat() + 0.000_01, centre.lng());
        assert!(
            !index.upsert("a", c2),
            "a metre from the centre is the same cell"
        );
        assert_eq!(index.get("a"), Some(c2));
        assert_eq!(
            index.within(c2, 0.0).len(),
            1,
            "the bucket holds the new position"
        );
        // Two kilometres away is another cell at resolution 9.
        let far = destination(c2.lat(), c2.lon(), 2_000.0, 90.0);
        assert!(index.upsert("a", far));
        assert_eq!(index.len(), 1);
        assert!(index.within(c2, 100.0).is_empty(), "left the old cell");
        assert_eq!(index.within(far, 1.0)[0].id.as_ref(), "a");
        assert_eq!(index.cells.len(), 1, "the emptied bucket is dropped");
        assert_eq!(index.remove("a"), Some(far));
        assert_eq!(index.remove("a"), None);
        assert!(index.is_empty());
        assert_eq!(index.cells.len(), 0);
        assert!(index.within(far, 10_000.0).is_empty());
    }

    #[test]
    fn invalid_positions_change_nothing() {
        let index = ProximityIndex::new(9).unwrap();
        let bad = Position {
            lat_e7: 950_000_000,
            lon_e7: 0,
        };
        assert!(!index.upsert("x", bad));
        assert!(index.is_empty());
        assert!(index.within(bad, 1_000.0).is_empty());
        assert!(index.nearest(bad, 3, 1_000.0).is_empty());
        index.upsert("y", pos(0.0, 0.0));
        assert!(index.within(pos(0.0, 0.0), f64::NAN).is_empty());
        assert!(index.within(pos(0.0, 0.0), -1.0).is_empty());
        assert!(index.nearest(pos(0.0, 0.0), 0, 1_000.0).is_empty());
    }

    #[test]
    fn cell_changes_are_detected_on_a_walk() {
        let index = ProximityIndex::new(9).unwrap();
        let mut at = pos(48.8566, 2.3522);
        index.upsert("walker", at);
        let mut changes = 0;
        for _ in 0..200 {
            let next = destination(at.lat(), at.lon(), 20.0, 45.0);
            let expected = index.cell_of(next) != index.cell_of(at);
            assert_eq!(index.upsert("walker", next), expected);
            changes += usize::from(expected);
            at = next;
        }
        // 4 km across ≈ 200 m edges crosses well over ten cells.
        assert!(changes > 10, "{changes}");
        assert_eq!(index.cells.len(), 1);
    }

    #[test]
    fn ring_for_is_monotone_and_capped() {
        for res in [0u8, 5, 7, 9, 12, 15] {
            let index = ProximityIndex::new(res).unwrap();
            let mut last = 0;
            let mut r = 0.0;
            while r < 3.0e7 {
                let k = index.ring_for(r);
                assert!(k >= last, "res {res} r {r}: {k} < {last}");
                assert!(k >= 1);
                assert!(k <= index.globe_ring);
                last = k;
                r = r * 1.1 + 1.0;
            }
            assert_eq!(index.ring_for(f64::INFINITY), index.globe_ring);
            let cells = Resolution::try_from(res).unwrap().cell_count();
            assert!(
                disk_size(index.globe_ring) >= cells && disk_size(index.globe_ring - 1) < cells
            );
            assert_eq!(index.ring_for(f64::NAN), index.ring_for(0.0));
        }
        let index = ProximityIndex::new(9).unwrap();
        assert!(index.ring_for(1_000.0) < 20, "{}", index.ring_for(1_000.0));
    }

    #[test]
    fn bearings() {
        let a = pos(0.0, 0.0);
        assert!(bearing_deg(a, pos(1.0, 0.0)).abs() < 1e-9);
        assert!((bearing_deg(a, pos(0.0, 1.0)) - 90.0).abs() < 1e-9);
        assert!((bearing_deg(a, pos(-1.0, 0.0)) - 180.0).abs() < 1e-9);
        assert!((bearing_deg(a, pos(0.0, -1.0)) - 270.0).abs() < 1e-9);
        // Across the anti-meridian the short way: east from 179.9 to -179.9.
        assert!((bearing_deg(pos(0.0, 179.9), pos(0.0, -179.9)) - 90.0).abs() < 1e-6);
        assert!((bearing_deg(pos(0.0, -179.9), pos(0.0, 179.9)) - 270.0).abs() < 1e-6);
        assert_eq!(bearing_deg(pos(90.0, 0.0), pos(80.0, 50.0)), 180.0);
        assert_eq!(bearing_deg(pos(-90.0, 0.0), pos(-80.0, 50.0)), 0.0);
        assert_eq!(bearing_deg(pos(89.0, 10.0), pos(90.0, 0.0)), 0.0);
        assert_eq!(bearing_deg(pos(89.0, 10.0), pos(-90.0, 0.0)), 180.0);
        assert!(
            (bearing_deg(pos(89.0, 0.0), pos(89.0, 180.0))).abs() < 1e-9,
            "over the pole"
        );
        assert_eq!(bearing_deg(a, a), 0.0);
        for (f, t) in [
            ((89.999, 179.0), (89.999, -179.0)),
            ((-89.5, -180.0), (-89.6, 180.0)),
        ] {
            let b = bearing_deg(pos(f.0, f.1), pos(t.0, t.1));
            assert!((0.0..360.0).contains(&b), "{b}");
        }
    }

    #[test]
    fn nearest_and_within_in_a_small_town() {
        let index = ProximityIndex::new(9).unwrap();
        let home = pos(46.2309, 15.2604);
        for (i, d) in [50.0, 300.0, 1_200.0, 4_000.0, 30_000.0].iter().enumerate() {
            index.upsert(
                &format!("o{i}"),
                destination(home.lat(), home.lon(), *d, 10.0 * i as f64),
            );
        }
        let near = index.nearest(home, 3, 5_000.0);
        let ids: Vec<&str> = near.iter().map(|n| n.id.as_ref()).collect();
        assert_eq!(ids, ["o0", "o1", "o2"]);
        assert!((near[0].distance_m - 50.0).abs() < 1.0);
        assert_eq!(
            index.nearest(home, 10, 5_000.0).len(),
            4,
            "the 30 km one is beyond the cap"
        );
        assert_eq!(index.nearest(home, 10, f64::INFINITY).len(), 5);
        assert_eq!(index.within(home, 1_000.0).len(), 2);
        assert_eq!(index.within(home, f64::INFINITY).len(), 5);
        // Ties are ordered by id.
        index.upsert("b-twin", pos(46.0, 15.0));
        index.upsert("a-twin", pos(46.0, 15.0));
        let twins = index.nearest(pos(46.0, 15.0), 2, 10.0);
        assert_eq!(twins[0].id.as_ref(), "a-twin");
        assert_eq!(twins[1].id.as_ref(), "b-twin");
    }

    // Spherical geometry on unit vectors, only to measure real H3 cells.
    type V3 = [f64; 3];
    fn v3(ll: LatLng) -> V3 {
        let (la, lo) = (ll.lat_radians(), ll.lng_radians());
        [la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()]
    }
    fn cross(a: V3, b: V3) -> V3 {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    }
    fn dot(a: V3, b: V3) -> f64 {
        a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    }
    fn norm(a: V3) -> f64 {
        dot(a, a).sqrt()
    }
    fn angle(a: V3, b: V3) -> f64 {
        norm(cross(a, b)).atan2(dot(a, b))
    }
    /// Angle from `p` to the minor great-circle arc `a`–`b`.
    fn to_arc(p: V3, a: V3, b: V3) -> f64 {
        let n = cross(a, b);
        let len = norm(n);
        let n = [n[0] / len, n[1] / len, n[2] / len];
        let s = dot(p, n);
        let q = [p[0] - s * n[0], p[1] - s * n[1], p[2] - s * n[2]];
        if dot(cross(a, q), n) >= 0.0 && dot(cross(q, b), n) >= 0.0 {
            s.abs().clamp(0.0, 1.0).asin()
        } else {
            angle(p, a).min(angle(p, b))
        }
    }
    /// Distance in metres (H3's sphere) between two disjoint convex cell boundaries.
    fn cells_apart_m(x: &[V3], y: &[V3]) -> f64 {
        let mut best = f64::INFINITY;
        for (p, q) in [(x, y), (y, x)] {
            for &v in p {
                for i in 0..q.len() {
                    best = best.min(to_arc(v, q[i], q[(i + 1) % q.len()]));
                }
            }
        }
        best * H3_EARTH_RADIUS_M
    }

    /// Checks the geometric claim behind `ring_for` on real H3 cells at `res`: pentagons and
    /// their neighbourhoods (where the grid is most distorted) plus `random` cells all over
    /// the globe. For every sampled centre cell and k ≤ `max_k`, the cells k+1 rings out must
    /// be at least as far from it as `ring_for` assumes the k-disk reaches. Prints the
    /// measured margins (with `--nocapture`).
    fn check_ring_guarantee(res: u8, max_k: u32, random: usize) {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(res);
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let r = Resolution::try_from(res).unwrap();
        let e = r.edge_length_m();
        let mut centres: Vec<CellIndex> = Vec::new();
        for p in r.pentagons() {
            centres.extend(p.grid_disk::<Vec<_>>(2));
        }
        for _ in 0..random {
            let lat = (2.0 * rand() - 1.0).asin().to_degrees();
            let lon = rand() * 360.0 - 180.0;
            centres.push(LatLng::new(lat, lon).unwrap().to_cell(r));
        }
        let mut max_circ = 0.0f64;
        let mut worst = vec![f64::INFINITY; max_k as usize + 1];
        for &c in &centres {
            let cb: Vec<V3> = c.boundary().iter().map(|&ll| v3(ll)).collect();
            let centre = v3(LatLng::from(c));
            for &v in &cb {
                max_circ = max_circ.max(angle(centre, v) * H3_EARTH_RADIUS_M);
            }
            let disk: Vec<(CellIndex, u32)> = c.grid_disk_distances_safe(max_k + 1).collect();
            for k in 1..=max_k {
                let reach = disk
                    .iter()
                    .filter(|(_, d)| *d == k + 1)
                    .map(|(x, _)| {
                        let xb: Vec<V3> = x.boundary().iter().map(|&ll| v3(ll)).collect();
                        cells_apart_m(&cb, &xb)
                    })
                    .fold(f64::INFINITY, f64::min);
                let claimed = 1.5 * MIN_EDGE_FRACTION * e * f64::from(k + 1)
                    - 2.0 * MAX_CIRCUMRADIUS_EDGES * e;
                assert!(
                    reach >= claimed,
                    "res {res} cell {c} k {k}: reach {reach} < claimed {claimed}"
                );
                worst[k as usize] = worst[k as usize].min(reach / e);
            }
        }
        println!(
            "res {res}: max circumradius {:.3} e; worst reach in edges for k = 1..: {:?}",
            max_circ / e,
            worst[1..]
                .iter()
                .map(|w| (w * 100.0).round() / 100.0)
                .collect::<Vec<_>>()
        );
        assert!(max_circ <= MAX_CIRCUMRADIUS_EDGES * e);
    }

    #[test]
    fn ring_guarantee_holds_on_real_cells() {
        for res in [5u8, 7, 9, 11] {
            check_ring_guarantee(res, 6, 60);
        }
    }

    /// The same for the wide disks of multi-kilometre queries (slow in debug: `cargo test
    /// --release --lib proximity -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn ring_guarantee_holds_for_wide_disks() {
        for res in [7u8, 9] {
            check_ring_guarantee(res, 30, 40);
        }
    }

    /// Every id is in exactly the bucket its `ids` entry names, with the same position.
    fn assert_consistent(index: &ProximityIndex) {
        let mut in_buckets = 0;
        for bucket in index.cells.iter() {
            assert!(!bucket.members.is_empty(), "empty bucket kept");
            for (id, p) in &bucket.members {
                let slot = index.ids.get(id.as_ref()).unwrap();
                assert_eq!((slot.0, slot.1), (*bucket.key(), *p), "{id}");
                in_buckets += 1;
            }
        }
        assert_eq!(in_buckets, index.len());
    }

    #[test]
    fn concurrent_writers_and_readers_keep_the_index_whole() {
        let index = ProximityIndex::new(9).unwrap();
        let centre = pos(48.8566, 2.3522);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let index = &index;
                s.spawn(move || {
                    for i in 0..3_000u32 {
                        // Ids shared between threads, so the same entry is raced for.
                        let id = format!("o{}", (i * 7 + t) % 50);
                        let at = destination(
                            centre.lat(),
                            centre.lon(),
                            f64::from((i * 37 + t * 11) % 3_000),
                            f64::from((i * 53) % 360),
                        );
                        if i % 11 == 0 {
                            index.remove(&id);
                        } else {
                            index.upsert(&id, at);
                        }
                        if i % 5 == 0 {
                            let found = index.within(at, 800.0);
                            let mut ids: Vec<&str> = found.iter().map(|n| n.id.as_ref()).collect();
                            ids.sort_unstable();
                            ids.dedup();
                            assert_eq!(ids.len(), found.len(), "a member reported twice");
                            index.nearest(at, 3, 2_000.0);
                        }
                    }
                });
            }
        });
        assert_consistent(&index);
    }

    /// Where a test scene is centred: the places where grids and formulas break first.
    fn scene_centre(kind: u8, res: u8, a: f64, b: f64) -> (f64, f64) {
        match kind {
            // Anywhere (uniform on the sphere).
            0 => ((2.0 * a - 1.0).asin().to_degrees(), b * 360.0 - 180.0),
            // Within 5° of either pole.
            1 => (
                if b < 0.5 {
                    85.0 + 5.0 * a
                } else {
                    -85.0 - 5.0 * a
                },
                b * 720.0 % 360.0 - 180.0,
            ),
            // On the anti-meridian, from either side.
            2 => (
                a * 120.0 - 60.0,
                if b < 0.5 {
                    180.0 - b * 0.05
                } else {
                    -180.0 + (b - 0.5) * 0.05
                },
            ),
            // On one of the twelve H3 pentagons at this resolution.
            _ => {
                let pentagons: Vec<CellIndex> =
                    Resolution::try_from(res).unwrap().pentagons().collect();
                let c = LatLng::from(pentagons[((a * 12.0) as usize).min(11)]);
                (c.lat(), c.lng())
            }
        }
    }

    fn scatter(centre: (f64, f64), (d, bearing): (f64, f64)) -> Position {
        destination(centre.0, centre.1, d, bearing)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// `within` and `nearest` equal a brute-force exact geodesic search over all members,
        /// after inserts, moves and removals, near poles, across the anti-meridian and next
        /// to pentagons, at resolutions 7 and 9, through the disk and the full-scan paths.
        #[test]
        fn queries_equal_brute_force(
            res in prop::sample::select(vec![7u8, 9]),
            kind in 0u8..4,
            (a, b) in (0.0..1.0f64, 0.0..1.0f64),
            members in prop::collection::vec(((0.0..6_000.0f64, 0.0..360.0f64), 0u8..8), 0..40),
            moves in prop::collection::vec((0usize..40, (0.0..6_000.0f64, 0.0..360.0f64), any::<bool>()), 0..15),
            queries in prop::collection::vec(((0.0..4_000.0f64, 0.0..360.0f64), 0.0..5_000.0f64, 1usize..8), 1..4),
            scan_when_cheaper in any::<bool>(),
        ) {
            let centre = scene_centre(kind, res, a, b);
            let mut index = ProximityIndex::new(res).unwrap();
            index.scan_when_cheaper = scan_when_cheaper;
            let mut truth: Vec<(String, Position)> = Vec::new();
            for (i, (offset, dup)) in members.iter().enumerate() {
                // One in eight shares the previous member's spot: ties ordered by id.
                let at = match truth.last() {
                    Some((_, p)) if *dup == 0 => *p,
                    _ => scatter(centre, *offset),
                };
                let id = format!("m{i:02}");
                prop_assert!(index.upsert(&id, at));
                truth.push((id, at));
            }
            for (which, offset, remove) in moves {
                if truth.is_empty() {
                    break;
                }
                let which = which % truth.len();
                if remove {
                    let (id, at) = truth.swap_remove(which);
                    prop_assert_eq!(index.remove(&id), Some(at));
                } else {
                    let at = scatter(centre, offset);
                    let id = truth[which].0.clone();
                    let changed = index.cell_of(truth[which].1) != index.cell_of(at);
                    prop_assert_eq!(index.upsert(&id, at), changed);
                    truth[which].1 = at;
                }
            }
            prop_assert_eq!(index.len(), truth.len());
            assert_consistent(&index);
            for (offset, radius, n) in queries {
                let q = scatter(centre, offset);
                let expected = brute_within(&truth, q, radius);
                prop_assert_eq!(plain(&index.within(q, radius)), expected.clone());
                let mut nearest = expected;
                nearest.truncate(n);
                prop_assert_eq!(plain(&index.nearest(q, n, radius)), nearest);
            }
        }
    }
}
