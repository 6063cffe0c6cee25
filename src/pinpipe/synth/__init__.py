"""Made-up data and its expected answers (not the source port).

- :mod:`pinpipe.synth.generate` — seeded synthetic tables with the real dirt at the real rates;
- :mod:`pinpipe.synth.vocabulary` — the words, names and dirty values the generator draws from;
- :mod:`pinpipe.synth.faults` — injected faults and send lists (re-sends, conflicts) for emulation;
- :mod:`pinpipe.synth.oracle` — the expected silver, quarantine and accounting for the records sent;
- :mod:`pinpipe.synth.profile` — dirt rates of raw records.
"""
