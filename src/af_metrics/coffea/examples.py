"""Two ordinary coffea processors, used by the tests, the overhead benchmark and the docs.

Nothing here knows about af-metrics: they stand for the user's unmodified analysis code.
"""

from __future__ import annotations

import awkward as ak
import hist
from coffea import processor


class MetHistogram(processor.ProcessorABC):
    """Missing transverse momentum per dataset (PuppiMET: NanoAOD v15 has no ``MET``)."""

    def process(self, events: ak.Array) -> dict:
        dataset = events.metadata["dataset"]
        h = hist.Hist.new.StrCat([], growth=True, name="dataset").Reg(50, 0, 250, name="met", label="MET [GeV]").Double()
        h.fill(dataset=dataset, met=events.PuppiMET.pt)
        return {"met": h, "events": {dataset: len(events)}}

    def postprocess(self, accumulator: dict) -> None:
        return None


class DimuonZPeak(processor.ProcessorABC):
    """Opposite-sign dimuon mass around the Z peak: two tight, isolated muons above 20/10 GeV."""

    def process(self, events: ak.Array) -> dict:
        dataset = events.metadata["dataset"]
        muons = events.Muon[(events.Muon.pt > 10) & (abs(events.Muon.eta) < 2.4) & events.Muon.tightId
                            & (events.Muon.pfRelIso04_all < 0.25)]
        two = muons[ak.num(muons) == 2]
        pairs = two[(two[:, 0].charge != two[:, 1].charge) & (two[:, 0].pt > 20)]
        mass = (pairs[:, 0] + pairs[:, 1]).mass
        h = hist.Hist.new.StrCat([], growth=True, name="dataset").Reg(60, 60, 120, name="mass", label="m(mumu) [GeV]").Double()
        h.fill(dataset=dataset, mass=mass)
        return {"mass": h, "selected": {dataset: len(mass)}, "events": {dataset: len(events)}}

    def postprocess(self, accumulator: dict) -> None:
        return None
