//! A run's points, held compactly: each metric name and dimension set once, and one small
//! row per point that refers to them by number. A sync of a big export holds millions of
//! points between the read and the store; as [`Point`]s with their shared pointers they took
//! 40 bytes each plus the store's own copies of their keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;

use super::Point;
use super::csv::{day_from_number, day_number};

/// A dimension set: dimension name to value.
pub type Dimensions = Arc<BTreeMap<String, String>>;

/// One point, by numbers: its day and period end as day numbers, its metric and dimension set
/// as indices into the [`Points`] it belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointRow {
    pub value: f64,
    pub day: i32,
    pub until: i32,
    pub set: u32,
    pub metric: u32,
}

impl PointRow {
    pub fn day(&self) -> NaiveDate {
        day_from_number(self.day)
    }

    pub fn until(&self) -> NaiveDate {
        day_from_number(self.until)
    }
}

/// Points of one run (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Points {
    metrics: Vec<Arc<str>>,
    /// Distinct as objects; two entries may hold equal maps (the store merges them by text).
    sets: Vec<Dimensions>,
    rows: Vec<PointRow>,
}

impl Points {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The number of a metric name, added if new.
    pub fn metric_index(&mut self, name: &str) -> u32 {
        match self.metrics.iter().position(|m| **m == *name) {
            Some(i) => i as u32,
            None => {
                self.metrics.push(Arc::from(name));
                (self.metrics.len() - 1) as u32
            }
        }
    }

    /// Adds a dimension set and gives its number (no lookup: the caller knows it is new).
    pub fn add_set(&mut self, set: Dimensions) -> u32 {
        self.sets.push(set);
        (self.sets.len() - 1) as u32
    }

    pub fn reserve(&mut self, additional: usize) {
        self.rows.reserve_exact(additional);
    }

    /// Adds a row whose metric and set numbers came from this collection.
    pub fn push_row(&mut self, row: PointRow) {
        debug_assert!((row.metric as usize) < self.metrics.len());
        debug_assert!((row.set as usize) < self.sets.len());
        self.rows.push(row);
    }

    pub fn rows(&self) -> &[PointRow] {
        &self.rows
    }

    /// The rows, to reorder (their numbers must stay as they are).
    pub fn rows_mut(&mut self) -> &mut [PointRow] {
        &mut self.rows
    }

    pub fn metric(&self, row: &PointRow) -> &Arc<str> {
        &self.metrics[row.metric as usize]
    }

    pub fn metrics(&self) -> &[Arc<str>] {
        &self.metrics
    }

    pub fn sets(&self) -> &[Dimensions] {
        &self.sets
    }

    /// The point at `index`, as a [`Point`].
    pub fn get(&self, index: usize) -> Option<Point> {
        self.rows.get(index).map(|row| self.point(row))
    }

    fn point(&self, row: &PointRow) -> Point {
        Point {
            metric: self.metrics[row.metric as usize].clone(),
            day: row.day(),
            until: row.until(),
            dimensions: self.sets[row.set as usize].clone(),
            value: row.value,
        }
    }

    /// Every point, as [`Point`]s (made one at a time).
    pub fn iter(&self) -> PointIter<'_> {
        PointIter {
            points: self,
            next: 0,
        }
    }

    /// Keeps the points whose first day `keep` accepts.
    pub fn retain_days(&mut self, mut keep: impl FnMut(NaiveDate) -> bool) {
        self.rows.retain(|row| keep(row.day()));
    }

    /// Moves the points of `other` in.
    pub fn extend(&mut self, other: Points) {
        if self.rows.is_empty() && self.sets.is_empty() {
            *self = other;
            return;
        }
        let metrics: Vec<u32> = other.metrics.iter().map(|m| self.metric_index(m)).collect();
        let offset = self.sets.len() as u32;
        self.sets.extend(other.sets);
        self.rows.reserve(other.rows.len());
        self.rows.extend(other.rows.into_iter().map(|row| PointRow {
            set: row.set + offset,
            metric: metrics[row.metric as usize],
            ..row
        }));
    }
}

impl From<Vec<Point>> for Points {
    fn from(points: Vec<Point>) -> Points {
        let mut all = Points::default();
        all.reserve(points.len());
        // maps shared by several points keep one entry
        let mut seen: HashMap<usize, u32> = HashMap::new();
        for point in points {
            let address = Arc::as_ptr(&point.dimensions) as usize;
            let set = match seen.get(&address) {
                Some(set) => *set,
                None => {
                    let set = all.add_set(point.dimensions.clone());
                    seen.insert(address, set);
                    set
                }
            };
            let metric = all.metric_index(&point.metric);
            all.rows.push(PointRow {
                value: point.value,
                day: day_number(point.day),
                until: day_number(point.until),
                set,
                metric,
            });
        }
        all
    }
}

/// See [`Points::iter`].
pub struct PointIter<'a> {
    points: &'a Points,
    next: usize,
}

impl Iterator for PointIter<'_> {
    type Item = Point;

    fn next(&mut self) -> Option<Point> {
        let point = self.points.get(self.next)?;
        self.next += 1;
        Some(point)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.points.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for PointIter<'_> {}

impl<'a> IntoIterator for &'a Points {
    type Item = Point;
    type IntoIter = PointIter<'a>;

    fn into_iter(self) -> PointIter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(metric: &str, day: &str, set: &Dimensions, value: f64) -> Point {
        let day: NaiveDate = day.parse().unwrap();
        Point {
            metric: Arc::from(metric),
            day,
            until: day,
            dimensions: set.clone(),
            value,
        }
    }

    #[test]
    fn points_round_trip_and_merge() {
        let a: Dimensions = Arc::new(BTreeMap::from([("region".into(), "KZ".into())]));
        let b: Dimensions = Arc::new(BTreeMap::new());
        let first = vec![
            point("sessions", "2026-01-01", &a, 1.0),
            point("leads", "2026-01-01", &a, 2.0),
            point("sessions", "2026-01-02", &b, 3.0),
            point("sessions", "2026-01-03", &a, 4.0),
        ];
        let mut points = Points::from(first.clone());
        assert_eq!(points.len(), 4);
        assert_eq!(points.sets().len(), 2, "a shared map is kept once");
        assert_eq!(points.iter().collect::<Vec<_>>(), first);

        let second = Points::from(vec![
            point("orders", "2026-01-05", &b, 5.0),
            point("sessions", "2026-01-05", &b, 6.0),
        ]);
        assert_eq!(second.sets().len(), 1, "points sharing a map share a set");
        points.extend(second);
        points.retain_days(|day| day != "2026-01-02".parse::<NaiveDate>().unwrap());
        let got: Vec<(String, String, f64, usize)> = points
            .iter()
            .map(|p| {
                (
                    p.metric.to_string(),
                    p.day.to_string(),
                    p.value,
                    p.dimensions.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("sessions".into(), "2026-01-01".into(), 1.0, 1),
                ("leads".into(), "2026-01-01".into(), 2.0, 1),
                ("sessions".into(), "2026-01-03".into(), 4.0, 1),
                ("orders".into(), "2026-01-05".into(), 5.0, 0),
                ("sessions".into(), "2026-01-05".into(), 6.0, 0),
            ]
        );
        assert_eq!(points.metrics().len(), 3, "metric names are merged by name");
    }
}
