"""1:N: what a search of a whole gallery means for a stranger, from an audit's pairs across every group.

Pure NumPy: no Django, no database.

A search compares a stranger with every subject in the gallery, not only with those of the stranger's own
group, and look-alikes cross groups. So the figures here are built from an audit's impostor pairs across
all of its people (the run's "all" group), and from the gallery's real composition:

* **Strata.** The audit's people are cut into disjoint strata by the attributes a gallery record can carry
  (sex, age group, race, age band, in that order), as far as the audit has enough people: a cut is made only
  when every part that holds gallery subjects keeps at least as many audit people as it holds subjects, plus
  one, and at least ``min_pool``. Each gallery subject is placed in the stratum its record names; where its
  record leaves an attribute unknown, it is shared among that cut's parts in proportion to their audit people
  ("unknown" means it could be anyone). Audit people whose own attribute is unknown form a part of their own.

* **Strangers.** Each audit person i stands in for a stranger. Within stratum s, with c people in its pool
  (other than i) of whom k are at least this close to i (k counts photo pairs: a pair of people with several
  photos counts the share of their photo pairs within the threshold), the chance that n subjects drawn from
  the pool without replacement are all further than the threshold is the hypergeometric
  C(c - k, n) / C(c, n). That is exactly the share of all n-subsets of the pool with no match: an unbiased
  estimate of what a gallery of n such people would do. Strata are disjoint, so for the whole gallery
  f_i = 1 - prod_s C(c_s - k_is, n_s) / C(c_s, n_s). A stratum with more subjects than pool (it happens
  only at the root, for a gallery larger than the audit) is extrapolated as C(c - k, c) ^ (n / c).

* **A group's FPIR** is the mean of f_i over its audited people: the share of searches for a stranger of
  the group that return anyone at or under the threshold. ``expected`` is the mean number of gallery
  subjects at least that close, sum_s n_s k_is / c_is.

* **Intervals.** A delete-a-block jackknife over people (each block of people is left out everywhere: as
  strangers and from every pool), so that it counts both who the strangers were and who the look-alikes
  were. Its variance gives an effective sample n_eff = F (1 - F) / Var, capped at the group's people, for a
  Wilson interval with Student's t on (people - 1) degrees of freedom, as for the pairwise rates.

On random halves of the shared photos (one half audited, the other enrolled and searched) this estimate
is unbiased where the earlier one (each group compared only with the subjects of its own group, pairwise
FMR raised to the power N) understated FPIR by 7 to 18 points at 0.5 to 0.6
(``tests/matching/accuracy/test_one_to_many_calibration.py``).

**Mated searches.** A search for someone who is enrolled misses them when their own photos are further
apart than the threshold: FNIR is the group's FNMR on its genuine pairs (one probe photo against one
enrolled photo), with the identity-level interval of ``rates.fnmr_at``. A group with no two photos of one
person says so, and the figure for everyone is offered in its place, marked as such.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from matching.accuracy.rates import (
    ADULT,
    AGE_GROUP,
    ALL_KEY,
    CHILD,
    AuditResult,
    RateInterval,
    age_band_lower,
    count_at_most,
    fnmr_at,
    t_quantile_975,
    wilson_bounds,
)

# The attributes a gallery record can carry, in the order the strata cut by them.
SPLIT_ORDER: tuple[str, ...] = ("sex", "age_group", "race", "age_band")
UNKNOWN = "?"
JACKKNIFE_BLOCKS = 25
# The audit columns that may hold each attribute a gallery record carries.
COLUMN_NAMES = {"sex": ("sex", "gender"), "race": ("race", "ethnicity"), "age_band": ("age_band",)}
SEX_WORDS = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}


def _normalise(name: str, value: str) -> str:
    value = (value or "").strip()
    if not value:
        return ""
    if name == "sex":
        return SEX_WORDS.get(value.lower(), value)
    if name == "race":
        return value.lower().rstrip("s")
    return value


def profile(attributes: Mapping[str, str]) -> dict[str, str]:
    """Audit attributes (any column names) in the words gallery records use: sex, race, age_band, age_group."""
    out: dict[str, str] = {}
    for name, columns in COLUMN_NAMES.items():
        for column, value in attributes.items():
            if column.lower() in columns and value:
                out[name] = _normalise(name, value)
    if attributes.get(AGE_GROUP):
        out["age_group"] = attributes[AGE_GROUP]
    if "age_band" in out and "age_group" not in out:
        lower = age_band_lower(out["age_band"])
        if lower is not None:
            out["age_group"] = CHILD if lower < 18 else ADULT
    return out


@dataclass(frozen=True, eq=False)
class Population:
    """An audit's people and its impostor pairs across all of them.

    ``groups[i]`` holds person i's audit attributes (the columns groups are named by: "race": "Asian"),
    ``profiles[i]`` the same person in the vocabulary of gallery records (``SPLIT_ORDER``), ``photos[i]``
    how many photos the person has. ``distances`` are every impostor pair's distance, sorted, with the two
    people of each pair in ``pairs``; ``genuine`` and ``genuine_people`` are the same-person pairs.
    """

    groups: tuple[Mapping[str, str], ...]
    profiles: tuple[Mapping[str, str], ...]
    photos: np.ndarray
    distances: np.ndarray
    pairs: np.ndarray
    genuine: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    genuine_people: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    @property
    def size(self) -> int:
        return len(self.profiles)

    @classmethod
    def build(
        cls,
        people: Sequence[tuple[int, Mapping[str, str]]],
        distances: np.ndarray,
        pairs: np.ndarray,
        genuine: np.ndarray,
        genuine_people: np.ndarray,
    ) -> Population:
        """From an audit's people ([photos, attributes] in the order of its "all" group) and that group's pairs."""
        groups = tuple(dict(attributes) for _, attributes in people)
        return cls(
            groups=groups,
            profiles=tuple(profile(attributes) for attributes in groups),
            photos=np.array([photos for photos, _ in people], dtype=np.int64),
            distances=np.asarray(distances),
            pairs=np.asarray(pairs).reshape(-1, 2),
            genuine=np.asarray(genuine),
            genuine_people=np.asarray(genuine_people, dtype=np.int32),
        )

    @classmethod
    def from_audit(cls, result: AuditResult) -> Population:
        everyone = result.group(ALL_KEY)
        return cls.build(
            result.people,
            everyone.impostor_distances,
            everyone.impostor_people,
            everyone.genuine_distances,
            everyone.genuine_people,
        )

    def members(self, attributes: Mapping[str, str]) -> np.ndarray:
        """The people of a group: everyone whose audit attributes include all of ``attributes``."""
        return np.array(
            [i for i, person in enumerate(self.groups) if all(person.get(k) == v for k, v in attributes.items())],
            dtype=np.int64,
        )


@dataclass(frozen=True, eq=False)
class Stratum:
    path: tuple[tuple[str, str], ...]  # the cuts that define it, e.g. (("sex", "F"), ("age_group", "?"))
    members: np.ndarray  # the audit people of its pool
    subjects: float  # gallery subjects placed in it (a share of those whose record leaves the cut unknown)


def strata_build(
    population: Population, gallery: Sequence[tuple[Mapping[str, str], int]], *, min_pool: int = 5
) -> tuple[Stratum, ...]:
    """Cut the audit's people into disjoint strata that the gallery's subjects are drawn from (module docstring)."""
    leaves: list[Stratum] = []
    profiles = population.profiles

    def visit(members: np.ndarray, items: list[tuple[Mapping[str, str], float]], path, order) -> None:
        for position, attribute in enumerate(order):
            parts: dict[str, list[int]] = {}
            for person in members:
                parts.setdefault(profiles[person].get(attribute) or UNKNOWN, []).append(int(person))
            if len(parts) < 2:
                continue
            placed: dict[str, list[tuple[Mapping[str, str], float]]] = {value: [] for value in parts}
            fits = True
            for record, weight in items:
                value = record.get(attribute)
                if not value:
                    for part, people in parts.items():
                        placed[part].append((record, weight * len(people) / len(members)))
                elif value in parts:
                    placed[value].append((record, weight))
                else:
                    fits = False  # the audit has nobody of this value: the cut cannot model these subjects
                    break
            if not fits:
                continue
            if any(
                len(parts[part]) < max(min_pool, sum(w for _, w in placed[part]) + 1)
                for part in parts
                if sum(w for _, w in placed[part]) > 0
            ):
                continue
            rest = order[:position] + order[position + 1 :]
            for part, people in parts.items():
                if placed[part]:
                    visit(np.array(people, dtype=np.int64), placed[part], (*path, (attribute, part)), rest)
            return
        leaves.append(Stratum(tuple(path), members, float(sum(w for _, w in items))))

    items = [(record, float(count)) for record, count in gallery if count > 0]
    if items and population.size:
        visit(np.arange(population.size, dtype=np.int64), items, (), SPLIT_ORDER)
    return tuple(leaves)


@dataclass(frozen=True)
class OneToMany:
    """One group's 1:N figures at one threshold, for one gallery.

    ``fpir``: the share of searches for a stranger of the group that return anyone at or under the threshold;
    ``expected``: the mean number of gallery subjects that close; ``fnir``: the share of searches for someone
    enrolled that miss them (``fnir_from`` says whose genuine pairs it rests on: the group's, or everyone's
    when the group has none). Every figure has its 95% interval.
    """

    threshold: float
    gallery_size: int
    people: int
    fpir: float | None
    fpir_low: float | None
    fpir_high: float | None
    effective_n: float | None
    expected: float | None
    expected_low: float | None
    expected_high: float | None
    fnir: float | None = None
    fnir_low: float | None = None
    fnir_high: float | None = None
    fnir_people: int = 0
    fnir_from: str = ""  # "group", "everyone" or "" (no genuine pairs at all)
    insufficient: bool = False
    reasons: tuple[str, ...] = ()

    @property
    def measured(self) -> bool:
        return not self.insufficient and self.fpir is not None


_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def log_gamma(x: np.ndarray) -> np.ndarray:
    """ln Γ(x) for x > 0, vectorised: shift by seven (Γ(x + 7) = x (x + 1) … (x + 6) Γ(x)), then Stirling.

    Within 1e-10 of ``math.lgamma`` (relative, for the values here; ``test_one_to_many`` checks it).
    """
    x = np.asarray(x, dtype=np.float64)
    shifted = x + 7.0
    product = x * (x + 1.0) * (x + 2.0) * (x + 3.0) * (x + 4.0) * (x + 5.0) * (x + 6.0)
    inverse = 1.0 / shifted
    square = inverse * inverse
    series = inverse * (1.0 / 12 - square * (1.0 / 360 - square * (1.0 / 1260 - square * (1.0 / 1680))))
    return (shifted - 0.5) * np.log(shifted) - shifted + _HALF_LOG_TWO_PI + series - np.log(product)


def log_no_match(k: np.ndarray, c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """log C(c - k, n) / C(c, n): no match among n drawn without replacement from c, of whom k match.

    k and n may be fractional (shares of photo pairs; shares of subjects whose record leaves an attribute
    unknown): the binomial coefficients are taken through the gamma function. Where n exceeds c it is
    extrapolated as (C(c - k, c) / C(c, c)) ^ (n / c). An empty pool tells nothing: 0 (no match).
    """
    k, c = np.broadcast_arrays(np.asarray(k, np.float64), np.asarray(c, np.float64))
    n = np.broadcast_to(np.asarray(n, np.float64), k.shape)
    drawn = np.minimum(n, c)
    room = c - k - drawn + 1.0
    possible = room > 0
    safe = np.where(possible, room, 1.0)
    cs = np.maximum(c, 0.0)
    logs = (
        log_gamma(np.maximum(cs - k, 0.0) + 1.0) + log_gamma(cs - drawn + 1.0) - log_gamma(safe) - log_gamma(cs + 1.0)
    )
    logs = np.where(possible, logs, -np.inf)
    logs = np.where(drawn <= 0, 0.0, logs)
    scale = np.where(n > c, n / np.maximum(c, 1.0), 1.0)
    with np.errstate(invalid="ignore"):
        logs = np.where(logs == -np.inf, -np.inf, logs * scale)
    return np.where(c <= 0, 0.0, logs)


@dataclass(frozen=True, eq=False)
class _AtThreshold:
    f: np.ndarray  # (P,) each person's FPIR
    expected: np.ndarray  # (P,)
    f_blocks: np.ndarray  # (B, P): with block b left out (entries of block b's own people unused)
    expected_blocks: np.ndarray


class GalleryModel:
    """A gallery's composition against one audit: the strata, and each person's figures at any threshold."""

    def __init__(
        self,
        population: Population,
        strata: Sequence[Stratum],
        *,
        blocks: int = JACKKNIFE_BLOCKS,
        min_people: int = 20,
        min_effective: float = 10.0,
    ) -> None:
        self.population = population
        self.strata = tuple(strata)
        self.gallery_size = round(sum(s.subjects for s in self.strata))
        self.min_people, self.min_effective = min_people, min_effective
        people = population.size
        self.blocks = max(2, min(blocks, people)) if people else 2
        self.block_of = np.arange(people, dtype=np.int64) % self.blocks
        self.stratum_of = np.full(people, -1, dtype=np.int64)
        for index, stratum in enumerate(self.strata):
            self.stratum_of[stratum.members] = index
        count = len(self.strata)
        self.subjects = np.array([s.subjects for s in self.strata], dtype=np.float64)
        self.pool = np.array([s.members.size for s in self.strata], dtype=np.float64)
        self.pool_blocks = np.zeros((self.blocks, count))
        placed = self.stratum_of >= 0
        np.add.at(self.pool_blocks, (self.block_of[placed], self.stratum_of[placed]), 1.0)
        self._cache: dict[float, _AtThreshold] = {}

    def _at(self, threshold: float) -> _AtThreshold:
        key = round(float(threshold), 9)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        population = self.population
        people, count, blocks = population.size, len(self.strata), self.blocks
        close = count_at_most(population.distances, threshold)
        pairs = np.asarray(population.pairs[:close], dtype=np.int64).reshape(-1, 2)
        a, b = pairs[:, 0], pairs[:, 1]
        photos = population.photos.astype(np.float64)
        weight = 1.0 / (photos[a] * photos[b]) if close else np.zeros(0)
        near = np.zeros((people, count))
        near_blocks = np.zeros((blocks, people, count))
        for person, partner in ((a, b), (b, a)):
            stratum = self.stratum_of[partner]
            keep = stratum >= 0
            np.add.at(near, (person[keep], stratum[keep]), weight[keep])
            np.add.at(near_blocks, (self.block_of[partner[keep]], person[keep], stratum[keep]), weight[keep])
        own = np.zeros((people, count))
        placed = self.stratum_of >= 0
        own[np.flatnonzero(placed), self.stratum_of[placed]] = 1.0
        pool = self.pool[None, :] - own
        # Clipped: the gamma function's last digits must not make a probability of -1e-15.
        f = np.clip(1.0 - np.exp(log_no_match(near, pool, self.subjects[None, :]).sum(axis=1)), 0.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = (np.where(pool > 0, near / pool, 0.0) * self.subjects[None, :]).sum(axis=1)
        near_left = near[None, :, :] - near_blocks
        pool_left = pool[None, :, :] - self.pool_blocks[:, None, :]
        f_blocks = np.clip(
            1.0 - np.exp(log_no_match(near_left, pool_left, self.subjects[None, None, :]).sum(axis=2)), 0.0, 1.0
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            expected_blocks = (np.where(pool_left > 0, near_left / pool_left, 0.0) * self.subjects).sum(axis=2)
        result = _AtThreshold(f, expected, f_blocks, expected_blocks)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = result
        return result

    def group(self, members: np.ndarray, threshold: float) -> OneToMany:
        """FPIR and expected strangers for the audited people ``members``, with their intervals, and FNIR."""
        members = np.asarray(members, dtype=np.int64)
        people = int(members.size)
        fnir = self._fnir(members, threshold)
        if people == 0 or not self.strata:
            reason = "no audited people in this group" if people == 0 else "the gallery has no searchable subject"
            return OneToMany(
                threshold, self.gallery_size, people, None, None, None, None, None, None, None,
                **fnir, insufficient=True, reasons=(reason,),
            )  # fmt: skip
        at = self._at(threshold)
        fpir = float(at.f[members].mean())
        expected = float(at.expected[members].mean())
        # Each block's estimate leaves that block's people out everywhere: as strangers and from every pool.
        estimates, counts = [], []
        for block in range(self.blocks):
            kept = members[self.block_of[members] != block]
            if kept.size:
                estimates.append((at.f_blocks[block, kept].mean(), at.expected_blocks[block, kept].mean()))
                counts.append(block)
        values = np.array(estimates) if estimates else np.zeros((0, 2))
        used = len(values)
        if used >= 2:
            spread = values - values.mean(axis=0)
            variance = (used - 1) / used * (spread**2).sum(axis=0)
        else:
            variance = np.array([0.0, 0.0])
        t = t_quantile_975(people - 1)
        if 0.0 < fpir < 1.0 and variance[0] > 0:
            effective = min(max(fpir * (1.0 - fpir) / variance[0], 1.0), float(people))
        else:
            effective = float(people)
        low, high = wilson_bounds(fpir, effective, t)
        half = t * math.sqrt(variance[1])
        reasons = []
        if people < self.min_people:
            reasons.append(f"{people} in the audit, fewer than {self.min_people}")
        if effective < self.min_effective:
            reasons.append(f"evidence of about {effective:.0f} strangers, fewer than {self.min_effective:g}")
        return OneToMany(
            threshold=float(threshold),
            gallery_size=self.gallery_size,
            people=people,
            fpir=fpir,
            fpir_low=low,
            fpir_high=high,
            effective_n=effective,
            expected=expected,
            expected_low=max(0.0, expected - half),
            expected_high=expected + half,
            **fnir,
            insufficient=bool(reasons),
            reasons=tuple(reasons),
        )

    def _fnir(self, members: np.ndarray, threshold: float) -> dict:
        population = self.population
        genuine, owners = np.asarray(population.genuine), np.asarray(population.genuine_people, dtype=np.int64)
        if genuine.size == 0:
            return {"fnir_from": ""}
        mine = np.isin(owners, members)
        source = "group" if mine.any() else "everyone"
        if not mine.any():
            mine = np.ones(genuine.size, dtype=bool)
        rate: RateInterval = fnmr_at(genuine[mine], owners[mine], threshold)
        return {
            "fnir": rate.rate,
            "fnir_low": rate.low,
            "fnir_high": rate.high,
            "fnir_people": int(np.unique(owners[mine]).size),
            "fnir_from": source,
        }
