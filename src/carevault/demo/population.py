"""Synthetic, Luxembourg-like directory data for demos, load tests and screenshots.

Demo data must never be real people, yet it has to look like Luxembourg or the demo misleads:
matching, search and display problems only show up with the country's real mix of
Luxembourgish, Portuguese, French, Italian, Belgian and German names, accented letters,
``L-NNNN`` postal codes and 13-digit matricules whose check digits hold. Everything here is drawn
from a seeded generator, so a given seed always produces the same population (tests and
benchmarks can rely on it) and nothing touches the disk or the network.

The hospitals are the real Luxembourg hospitals, because users expect to see them; the
laboratories are real network names; the pharmacies and group practices are invented. Postal
codes are plausible for their locality, not looked up.
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate
from typing import Generic, TypeVar

from carevault.domain.national_id import make_luxembourg_national_id

__all__ = [
    "OrganizationSeed",
    "PatientSeed",
    "PractitionerSeed",
    "organizations",
    "patients",
    "practitioners",
]


@dataclass(frozen=True)
class OrganizationSeed:
    """A care organisation of the demo directory; ``key`` is what other seeds point at."""

    key: str
    identifier: str
    name: str
    kind: str
    postal_code: str
    city: str


@dataclass(frozen=True)
class PatientSeed:
    """One synthetic person, with what a registration desk would record."""

    national_id: str
    family: str
    given: tuple[str, ...]
    gender: str
    birth_date: date
    street: str
    postal_code: str
    city: str
    phone: str
    local_ids: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class PractitionerSeed:
    """One synthetic health professional as listed in the professional directory."""

    identifier: str
    family: str
    given: tuple[str, ...]
    gender: str
    profession: str
    specialty: str | None
    organization_key: str | None


# --- organisations ------------------------------------------------------------------------

_ORGANIZATIONS: tuple[OrganizationSeed, ...] = tuple(
    OrganizationSeed(
        key=key,
        identifier=f"ORG-{index:04d}",
        name=name,
        kind=kind,
        postal_code=postal_code,
        city=city,
    )
    for index, (key, name, kind, postal_code, city) in enumerate(
        (
            ("chl", "Centre Hospitalier de Luxembourg", "hospital", "L-1210", "Luxembourg"),
            ("chem", "Centre Hospitalier Emile Mayrisch", "hospital", "L-4240", "Esch-sur-Alzette"),
            ("hrs", "Hôpitaux Robert Schuman", "hospital", "L-2540", "Luxembourg"),
            ("chdn", "Centre Hospitalier du Nord", "hospital", "L-9080", "Ettelbruck"),
            ("chnp", "Centre Hospitalier Neuro-Psychiatrique", "hospital", "L-9012", "Ettelbruck"),
            ("lns", "Laboratoire national de santé", "laboratory", "L-3555", "Dudelange"),
            ("lr", "Laboratoires Réunis", "laboratory", "L-6131", "Junglinster"),
            ("ketterthill", "Laboratoires Ketterthill", "laboratory", "L-4011", "Esch-sur-Alzette"),
            ("bionext", "BioneXt Lab", "laboratory", "L-8030", "Strassen"),
            ("ph-gare", "Pharmacie de la Gare", "pharmacy", "L-1611", "Luxembourg"),
            ("ph-brill", "Pharmacie du Brill", "pharmacy", "L-4041", "Esch-sur-Alzette"),
            ("ph-sure", "Pharmacie de la Sûre", "pharmacy", "L-9240", "Diekirch"),
            ("gm-sud", "Groupe Médical du Sud", "practice", "L-3440", "Dudelange"),
            ("mm-mersch", "Maison Médicale de Mersch", "practice", "L-7540", "Mersch"),
            ("cm-kirchberg", "Cabinet Médical du Kirchberg", "practice", "L-1855", "Luxembourg"),
        ),
        start=1,
    )
)


def organizations() -> list[OrganizationSeed]:
    """The fixed set of demo organisations; a new list each call so callers may reorder it."""
    return list(_ORGANIZATIONS)


def _keys_of_kind(kind: str) -> tuple[str, ...]:
    return tuple(org.key for org in _ORGANIZATIONS if org.kind == kind)


# --- names ----------------------------------------------------------------------------------
# One entry per community, with its share of the population: (weight, family names, male given
# names, female given names). The shares follow the order of magnitude of the resident
# population by nationality (Luxembourgish about half, Portuguese the largest minority).


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated names, so that long lists stay readable (names may contain spaces).

    Whitespace inside a name is collapsed, so a name may wrap across source lines.
    """
    return tuple(" ".join(name.split()) for name in text.split(",") if name.strip())


@dataclass(frozen=True)
class _Community:
    weight: float
    family: tuple[str, ...]
    male: tuple[str, ...]
    female: tuple[str, ...]


_LUXEMBOURGISH = _Community(
    weight=50,
    family=_names(
        """
        Schmit, Muller, Weber, Wagner, Hoffmann, Thill, Schiltz, Kremer, Klein, Schmitz, Reuter,
        Welter, Kieffer, Becker, Majerus, Schroeder, Weis, Hansen, Meyer, Goedert, Schneider,
        Ludwig, Hermes, Steffen, Braun, Lentz, Wirtz, Krier, Theisen, Kayser, Koch, Faber,
        Jacoby, Kirsch, Kinnen, Feller, Frisch, Gloden, Jungers, Lanners, Linster, Mersch,
        Nilles, Olinger, Pletschette, Reding, Roth, Schaack, Scholtes, Schumacher, Spautz,
        Thoma, Trausch, Urbany, Wampach, Weydert, Wolff, Zeimet, Bettendorf, Biver, Clement,
        Decker, Diederich, Dondelinger, Ernster, Flammang, Fischbach, Gengler, Goerens, Heinen,
        Hemmen, Hoscheit, Kass, Kemp, Kugener, Mangen, Molitor, Nosbusch, Origer, Peiffer,
        Rippinger, Schaus, Stoffel, Streff, Wagener, Weyland, Zenner, Bintner, Colling,
        Erpelding, Glesener, Hengen, Kneip, Loos, Michels, Neuens, Pauly, Rausch, Sinner,
        Thinnes, Ries, Wiltzius
        """
    ),
    male=_names(
        """
        Jean, Marc, Paul, Luc, Claude, Jos, Romain, Guy, Fernand, Nico, Gilles, Pierre, Tom,
        Max, Ben, Yves, Laurent, Patrick, Georges, Michel, Jean-Paul, Jean-Claude, Lucien,
        Gérard, Raymond, Roger, Mathis, Noah, Léon, Charel, Théo, Tun, Joé, Lex, Mett, Gusty
        """
    ),
    female=_names(
        """
        Marie, Anne, Christiane, Martine, Monique, Nicole, Josée, Claudine, Sandra, Carole,
        Tessy, Sophie, Laura, Léa, Emma, Mia, Lara, Julie, Sarah, Anouk, Nathalie, Danielle,
        Jeanne, Marie-Paule, Marguerite, Maisy, Lena, Zoé, Chloé, Liz, Mady, Josiane, Fernande
        """
    ),
)

_PORTUGUESE = _Community(
    weight=16,
    family=_names(
        """
        Da Silva, Dos Santos, Ferreira, Pereira, Oliveira, Costa, Rodrigues, Martins, Gonçalves,
        Lopes, Marques, Almeida, Ribeiro, Pinto, Carvalho, Teixeira, Sousa, Fernandes, Gomes,
        Mendes, Alves, Correia, Cardoso, Monteiro, Lima, Fonseca, Machado, Nunes, Soares,
        Vieira, Moreira, Cunha, Barbosa, Araújo, Rocha, Freitas, Tavares, Batista, Magalhães,
        Azevedo, Simões, Coelho, Cruz, Faria, Antunes, Pires, Matos, Loureiro, Figueiredo,
        Conceição
        """
    ),
    male=_names(
        """
        João, José, António, Manuel, Carlos, Paulo, Luís, Pedro, Rui, Nuno, Miguel, Ricardo,
        Jorge, Tiago, Bruno, André, Diogo, Fernando, Francisco, Gonçalo, Joaquim, Vítor, Hugo,
        Sérgio, Rafael, Duarte, Afonso, Rodrigo, Tomás, Martim
        """
    ),
    female=_names(
        """
        Maria, Ana, Sofia, Catarina, Inês, Beatriz, Mariana, Joana, Rita, Sara, Carla, Sandra,
        Patrícia, Fernanda, Isabel, Teresa, Manuela, Fátima, Cláudia, Susana, Filipa, Leonor,
        Matilde, Margarida, Raquel, Liliana, Vânia, Daniela, Lúcia, Conceição
        """
    ),
)

_FRENCH = _Community(
    weight=9,
    family=_names(
        """
        Martin, Bernard, Dubois, Thomas, Robert, Richard, Petit, Durand, Leroy, Moreau, Laurent,
        Lefèvre, Michel, David, Bertrand, Roux, Vincent, Fournier, Morel, Girard, André,
        Mercier, Dupont, Lambert, Bonnet, François, Legrand, Garnier, Faure, Rousseau, Blanc,
        Guérin, Henry, Roussel, Nicolas, Perrin, Morin, Mathieu, Gauthier, Dumont, Fontaine,
        Chevalier, Robin, Masson, Gérard, Boyer, Denis, Lemaire, Duval, Joly, Gaillard, Collin,
        Schmitt, Muller, Lefebvre, Bénard
        """
    ),
    male=_names(
        """
        Jean, Pierre, Nicolas, Julien, Thomas, Alexandre, Philippe, François, Antoine,
        Sébastien, Olivier, Christophe, Mathieu, Guillaume, Romain, Hugo, Lucas, Louis, Gabriel,
        Arthur, Jules, Raphaël, Maxime, Benoît, Éric, Stéphane, Frédéric, Thierry, Didier,
        Bernard
        """
    ),
    female=_names(
        """
        Marie, Nathalie, Isabelle, Sylvie, Catherine, Françoise, Valérie, Sandrine, Céline,
        Stéphanie, Aurélie, Émilie, Camille, Manon, Léa, Chloé, Inès, Jade, Louise, Alice,
        Juliette, Élodie, Hélène, Brigitte, Chantal, Véronique, Mélanie, Agathe, Margaux,
        Clémence
        """
    ),
)

_ITALIAN = _Community(
    weight=5,
    family=_names(
        """
        Rossi, Russo, Ferrari, Esposito, Bianchi, Romano, Colombo, Ricci, Marino, Greco, Bruno,
        Gallo, Conti, De Luca, Mancini, Giordano, Rizzo, Lombardi, Moretti, Barbieri, Fontana,
        Santoro, Mariani, Rinaldi, Caruso, Ferrara, Galli, Martini, Leone, Longo, Gentile,
        Martinelli, Vitale, Lombardo, Serra, Coppola, De Santis, D'Angelo, Marchetti, Parisi,
        Villa, Conte, Ferraro, Fabbri, Bianco, Marini, Grasso, Valentini, Messina, Sala, De
        Angelis, Gatti, Pellegrini, Palumbo, Sanna, Farina, Rizzi, Monti, Cocco, Di Bartolomeo
        """
    ),
    male=_names(
        """
        Giuseppe, Giovanni, Antonio, Mario, Luigi, Francesco, Angelo, Vincenzo, Pietro,
        Salvatore, Carlo, Franco, Domenico, Bruno, Paolo, Michele, Marco, Alessandro, Andrea,
        Matteo, Lorenzo, Davide, Stefano, Luca, Simone, Roberto, Fabio, Gianluca, Enrico,
        Niccolò
        """
    ),
    female=_names(
        """
        Maria, Anna, Giuseppina, Rosa, Angela, Giovanna, Teresa, Lucia, Carmela, Caterina,
        Francesca, Chiara, Giulia, Sofia, Martina, Alessia, Elena, Sara, Valentina, Federica,
        Silvia, Paola, Laura, Elisa, Alice, Aurora, Ginevra, Beatrice, Rita, Antonella
        """
    ),
)

_BELGIAN = _Community(
    weight=4,
    family=_names(
        """
        Peeters, Janssens, Maes, Jacobs, Mertens, Willems, Claes, Goossens, Wouters, De Smet,
        Leclercq, Lejeune, Renard, Simon, Gilles, Hubert, Collard, Thiry, Dethier, Piron,
        Delvaux, Noël, Lecomte, Jacquemin, Bodart, Pirard, Marchal, Henrard, Wilmotte, Lambert,
        Dupont, Dubois, Van den Broeck, Vermeulen, De Backer, Nicolaï, Lhoest, Gérard
        """
    ),
    male=_names(
        """
        Luc, Marc, Jean-Pierre, Didier, Philippe, Michel, Alain, Éric, Patrick, Dirk, Jan, Wim,
        Koen, Pieter, Bart, Geert, Maxime, Arnaud, Quentin, Florian, Nathan, Louis, Noah,
        Arthur, Jules, Victor, Baptiste, Cédric, Grégory, Benoît
        """
    ),
    female=_names(
        """
        Anne, Isabelle, Nathalie, Véronique, Christine, Martine, Els, Katrien, Sofie, Lies,
        Hilde, Ann, Griet, Marie, Laura, Emma, Louise, Olivia, Lina, Élise, Charlotte, Amélie,
        Justine, Pauline, Aurélie, Caroline, Delphine, Sylvie, Valérie, Noémie
        """
    ),
)

_GERMAN = _Community(
    weight=3,
    family=_names(
        """
        Müller, Schmidt, Schneider, Fischer, Weber, Meyer, Wagner, Becker, Schulz, Hoffmann,
        Schäfer, Koch, Bauer, Richter, Klein, Wolf, Schröder, Neumann, Schwarz, Zimmermann,
        Braun, Krüger, Hofmann, Hartmann, Lange, Schmitt, Werner, Krause, Meier, Lehmann,
        Schulze, Köhler, Herrmann, König, Walter, Mayer, Huber, Kaiser, Fuchs, Peters, Scholz,
        Möller, Weiß, Jung, Hahn, Schubert, Vogel, Friedrich, Keller, Günther, Frank, Berger,
        Blöcher
        """
    ),
    male=_names(
        """
        Thomas, Michael, Andreas, Stefan, Klaus, Jürgen, Wolfgang, Peter, Frank, Uwe, Matthias,
        Christian, Markus, Alexander, Tobias, Jan, Felix, Lukas, Jonas, Maximilian, Paul, Leon,
        Florian, Sebastian, Dieter, Günter, Horst, Bernd, Ralf, Jörg
        """
    ),
    female=_names(
        """
        Ursula, Sabine, Petra, Monika, Andrea, Claudia, Susanne, Birgit, Katrin, Anja, Julia,
        Anna, Lena, Laura, Lisa, Sophie, Marie, Hannah, Leonie, Johanna, Katharina, Christine,
        Gabriele, Renate, Heike, Jutta, Ingrid, Helga, Brigitte, Jessica
        """
    ),
)

_PATIENT_COMMUNITIES = (_LUXEMBOURGISH, _PORTUGUESE, _FRENCH, _ITALIAN, _BELGIAN, _GERMAN)
# Health professionals in Luxembourg come far more often from the neighbouring countries
# (many are cross-border workers) than the resident population does.
_PRACTITIONER_COMMUNITY_WEIGHTS = (34, 7, 24, 5, 16, 14)


# --- places ---------------------------------------------------------------------------------
# (locality, relative population, lowest and highest postal code used for it)

_LOCALITIES: tuple[tuple[str, float, int, int], ...] = (
    ("Luxembourg", 135, 1009, 2999),
    ("Esch-sur-Alzette", 37, 4002, 4398),
    ("Differdange", 29, 4501, 4598),
    ("Dudelange", 22, 3401, 3490),
    ("Pétange", 20, 4701, 4799),
    ("Hesperange", 16, 5801, 5899),
    ("Käerjeng", 11, 4901, 4999),
    ("Bettembourg", 11, 3201, 3290),
    ("Schifflange", 11, 3801, 3899),
    ("Mersch", 10, 7501, 7599),
    ("Strassen", 10, 8001, 8049),
    ("Kayl", 9, 3601, 3699),
    ("Ettelbruck", 9, 9001, 9099),
    ("Mamer", 8, 8201, 8299),
    ("Walferdange", 8, 7201, 7299),
    ("Junglinster", 8, 6101, 6199),
    ("Wiltz", 8, 9501, 9599),
    ("Diekirch", 7, 9201, 9299),
    ("Mondercange", 7, 3901, 3999),
    ("Echternach", 6, 6401, 6499),
    ("Rumelange", 6, 3701, 3799),
    ("Steinfort", 6, 8401, 8499),
    ("Grevenmacher", 5, 6701, 6799),
    ("Mondorf-les-Bains", 5, 5601, 5699),
    ("Clervaux", 5, 9701, 9799),
    ("Remich", 4, 5501, 5599),
    ("Redange-sur-Attert", 3, 8501, 8599),
    ("Troisvierges", 3, 9901, 9999),
    ("Capellen", 3, 8301, 8399),
    ("Larochette", 2, 7601, 7699),
    ("Vianden", 2, 9401, 9499),
)

_STREETS = _names(
    """
    rue de la Gare, rue Principale, Grand-Rue, rue de l'Église, rue du Moulin, rue des Prés, rue
    des Jardins, rue de la Fontaine, rue des Vignes, rue du Cimetière, rue de la Forêt, rue du
    Château, rue des Romains, rue des Écoles, rue du Parc, rue des Champs, rue de la Chapelle,
    rue Grande-Duchesse Charlotte, avenue de la Liberté, rue Michel Rodange, rue Dicks, rue
    Robert Schuman, rue Jean Monnet, route de Luxembourg, route d'Arlon, route de Thionville,
    rue de Strasbourg, rue Nicolas Welter, rue de la Montagne, rue du Village, rue de la
    Résistance, rue Émile Mayrisch, rue du Brill, rue de l'Alzette, rue de la Sûre, rue de la
    Moselle, rue des Tilleuls, rue des Bouleaux, rue des Hêtres, rue des Acacias, rue Pasteur,
    rue Victor Hugo, rue Beethoven, rue de Bettembourg, rue d'Esch, rue de Mondorf, op der Heed,
    um Bierg, an der Laach, am Duerf
    """
)

# Luxembourg mobile prefixes (POST, Tango, Orange and their MVNOs).
_MOBILE_PREFIXES = ("621", "628", "661", "671", "681", "691")


# --- professions ----------------------------------------------------------------------------
# Codes from src/carevault/config/professions.json (a test checks they all exist there).
# Weights give the rough make-up of the Luxembourg professional register: nurses and
# physicians dominate; medical assistants are rare.

_PROFESSION_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("nurse", 38),
    ("physician", 26),
    ("physiotherapist", 10),
    ("pharmacist", 7),
    ("psychotherapist", 6),
    ("dentist", 6),
    ("midwife", 3),
    ("laboratory-biologist", 2),
    ("medical-assistant", 0.5),
)

# Specialty codes per profession with their weights; ``None`` stands for "no specialty
# recorded" (a dentist without orthodontics, a physician still in training).
_SPECIALTY_WEIGHTS: dict[str, tuple[tuple[str | None, float], ...]] = {
    "physician": (
        ("general-practice", 33),
        ("internal-medicine", 12),
        ("paediatrics", 8),
        ("gynaecology-obstetrics", 7),
        ("psychiatry", 7),
        ("cardiology", 6),
        ("radiology", 6),
        ("emergency-medicine", 6),
        ("oncology", 4),
        ("medical-genetics", 1),
        (None, 4),
    ),
    "dentist": (("orthodontics", 12), (None, 88)),
    "laboratory-biologist": (("clinical-chemistry", 45), (None, 55)),
}
# Pharmacists get their specialty from where they work, not from a draw.
_HOSPITAL_PHARMACY = "hospital-pharmacy"

# Where each profession works: organisation kind (or None for independent practice/home care).
_WORKPLACE_WEIGHTS: dict[str, tuple[tuple[str | None, float], ...]] = {
    "nurse": (("hospital", 72), ("practice", 6), (None, 22)),
    "physician": (("hospital", 50), ("practice", 35), (None, 15)),
    "physiotherapist": (("hospital", 25), ("practice", 25), (None, 50)),
    "pharmacist": (("pharmacy", 82), ("hospital", 14), ("laboratory", 4)),
    "psychotherapist": (("hospital", 20), ("practice", 30), (None, 50)),
    "dentist": (("practice", 40), (None, 60)),
    "midwife": (("hospital", 75), (None, 25)),
    "laboratory-biologist": (("laboratory", 85), ("hospital", 15)),
    "medical-assistant": (("hospital", 50), ("practice", 50)),
}

_FEMALE_SHARE: dict[str, float] = {
    "nurse": 0.84,
    "physician": 0.45,
    "physiotherapist": 0.55,
    "pharmacist": 0.70,
    "psychotherapist": 0.75,
    "dentist": 0.45,
    "midwife": 0.98,
    "laboratory-biologist": 0.55,
    "medical-assistant": 0.80,
}

# Patients attend the big general hospitals far more often than the psychiatric one.
_HOSPITAL_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("chl", 30),
    ("hrs", 25),
    ("chem", 25),
    ("chdn", 15),
    ("chnp", 5),
)

_FIRST_BIRTH_YEAR = 1930
_LAST_BIRTH_YEAR = 2025
# One matricule per (birth date, 3-digit sequence number).
_PATIENT_CAPACITY = (date(_LAST_BIRTH_YEAR + 1, 1, 1) - date(_FIRST_BIRTH_YEAR, 1, 1)).days * 1000
_PRACTITIONER_ID_SPACE = 999_999  # "HP-000001" to "HP-999999"


def patients(n: int, seed: int) -> Iterator[PatientSeed]:
    """Yield ``n`` synthetic patients; the same ``seed`` always yields the same ones.

    Lazy, so a load test can stream 100,000 patients without holding them all. Matricules are
    unique within one run because the sequence number is drawn without repetition per birth
    date.
    """
    if not 0 <= n <= _PATIENT_CAPACITY:
        raise ValueError(f"n must be between 0 and {_PATIENT_CAPACITY}, got {n}")
    return _generate_patients(n, seed)


def practitioners(m: int, seed: int) -> Iterator[PractitionerSeed]:
    """Yield ``m`` synthetic health professionals with unique ``HP-`` identifiers."""
    if not 0 <= m <= _PRACTITIONER_ID_SPACE:
        raise ValueError(f"m must be between 0 and {_PRACTITIONER_ID_SPACE}, got {m}")
    return _generate_practitioners(m, seed)


def _rng(stream: str, seed: int) -> random.Random:
    # A named stream per generator, so patients(n, s) and practitioners(m, s) are not drawn
    # from the same sequence. Not for security: this is demo data.
    return random.Random(f"carevault.demo.{stream}:{seed}")  # noqa: S311


_T = TypeVar("_T")


class _Picker(Generic[_T]):
    """Weighted choice with the cumulative weights computed once.

    ``random.choices`` rebuilds its arguments on every call; drawing through ``bisect`` directly
    keeps 100,000 patients within a couple of seconds.
    """

    def __init__(self, rng: random.Random, weighted: Sequence[tuple[_T, float]]) -> None:
        self._random = rng.random
        self._values = tuple(value for value, _ in weighted)
        self._cum = tuple(accumulate(weight for _, weight in weighted))
        self._total = self._cum[-1]
        self._last = len(self._values) - 1

    def pick(self) -> _T:
        return self._values[bisect(self._cum, self._random() * self._total, 0, self._last)]


def _year_weight(year: int) -> float:
    """A crude age pyramid: flat up to 60, then thinning out towards the oldest."""
    age = _LAST_BIRTH_YEAR - year
    return 1.0 if age <= 60 else max(0.08, 1.0 - (age - 60) / 40)


def _generate_patients(n: int, seed: int) -> Iterator[PatientSeed]:
    rng = _rng("patients", seed)
    random_ = rng.random
    randrange = rng.randrange
    choice = rng.choice

    communities = _Picker(
        rng, [(community, community.weight) for community in _PATIENT_COMMUNITIES]
    )
    years = range(_FIRST_BIRTH_YEAR, _LAST_BIRTH_YEAR + 1)
    birth_years = _Picker(rng, [(year, _year_weight(year)) for year in years])
    year_starts = {year: date(year, 1, 1) for year in years}
    year_lengths = {year: (date(year + 1, 1, 1) - date(year, 1, 1)).days for year in years}
    localities = _Picker(rng, [(place, place[1]) for place in _LOCALITIES])
    hospitals = _Picker(rng, _HOSPITAL_WEIGHTS)
    # Each hospital numbers its own patients: a counter from a seeded start, in random steps.
    next_local = {key: randrange(1_000_000, 5_000_000) for key, _ in _HOSPITAL_WEIGHTS}
    used_sequences: dict[date, set[int]] = {}

    for _ in range(n):
        community = communities.pick()
        # Roughly one household in ten mixes communities (married name, mixed parents).
        name_source = communities.pick() if random_() < 0.1 else community
        family = choice(name_source.family)
        if name_source is _PORTUGUESE and random_() < 0.35:
            second = choice(_PORTUGUESE.family)
            if second != family:
                family = f"{family} {second}"

        draw = random_()
        if draw < 0.494:
            gender, pool = "male", community.male
        elif draw < 0.988:
            gender, pool = "female", community.female
        else:
            gender = "other" if draw < 0.994 else "unknown"
            pool = community.male + community.female
        given = _given_names(rng, pool)

        while True:
            year = birth_years.pick()
            born = year_starts[year] + timedelta(days=randrange(year_lengths[year]))
            taken = used_sequences.setdefault(born, set())
            if len(taken) < 1000:
                break
        sequence = randrange(1000)
        while sequence in taken:
            sequence = randrange(1000)
        taken.add(sequence)

        city, _, low, high = localities.pick()
        street = f"{randrange(1, 160)}, {choice(_STREETS)}"
        phone = f"+352 {choice(_MOBILE_PREFIXES)} {randrange(1000):03d} {randrange(1000):03d}"

        local_ids: list[tuple[str, str]] = []
        draw = random_()
        count = 0 if draw < 0.4 else 1 if draw < 0.8 else 2
        while len(local_ids) < count:
            key = hospitals.pick()
            if any(key == existing for existing, _ in local_ids):
                continue
            next_local[key] += randrange(1, 8)
            local_ids.append((key, f"{next_local[key]:08d}"))

        yield PatientSeed(
            national_id=make_luxembourg_national_id(born, sequence),
            family=family,
            given=given,
            gender=gender,
            birth_date=born,
            street=street,
            postal_code=f"L-{randrange(low, high + 1):04d}",
            city=city,
            phone=phone,
            local_ids=tuple(local_ids),
        )


def _given_names(rng: random.Random, pool: Sequence[str]) -> tuple[str, ...]:
    """Mostly one given name, sometimes two, rarely three, never the same one twice."""
    draw = rng.random()
    count = 1 if draw < 0.70 else 2 if draw < 0.97 else 3
    names: list[str] = []
    while len(names) < count:
        name = rng.choice(pool)
        if name not in names:
            names.append(name)
    return tuple(names)


def _generate_practitioners(m: int, seed: int) -> Iterator[PractitionerSeed]:
    rng = _rng("practitioners", seed)
    identifiers = rng.sample(range(1, _PRACTITIONER_ID_SPACE + 1), m)
    community = _Picker(
        rng, list(zip(_PATIENT_COMMUNITIES, _PRACTITIONER_COMMUNITY_WEIGHTS, strict=True))
    )
    profession_picker = _Picker(rng, _PROFESSION_WEIGHTS)
    specialty_pickers = {
        profession: _Picker(rng, weighted) for profession, weighted in _SPECIALTY_WEIGHTS.items()
    }
    workplace_pickers = {
        profession: _Picker(rng, weighted) for profession, weighted in _WORKPLACE_WEIGHTS.items()
    }
    keys_by_kind = {
        kind: _keys_of_kind(kind) for kind in ("hospital", "laboratory", "pharmacy", "practice")
    }

    for number in identifiers:
        origin = community.pick()
        profession = profession_picker.pick()
        female = rng.random() < _FEMALE_SHARE[profession]
        gender = "female" if female else "male"
        given = _given_names(rng, origin.female if female else origin.male)

        kind = workplace_pickers[profession].pick()
        organization_key = None if kind is None else rng.choice(keys_by_kind[kind])

        specialty: str | None
        if profession == "pharmacist":
            specialty = _HOSPITAL_PHARMACY if kind == "hospital" else None
        elif profession in specialty_pickers:
            specialty = specialty_pickers[profession].pick()
        else:
            specialty = None

        yield PractitionerSeed(
            identifier=f"HP-{number:06d}",
            family=rng.choice(origin.family),
            given=given,
            gender=gender,
            profession=profession,
            specialty=specialty,
            organization_key=organization_key,
        )
