"""companion: the tablet app that turns what the pedal looped into arranged songs.

This package will hold the project model (tracks, clips, metatracks, effects, automation and
a tempo map, with positions in whole notes) kept as a shared pycrdt document so that local
editing, undo and collaboration are one mechanism; the engine that renders that model block
by block, the same code for offline bounces and live playback; file management for the
pedal; and peer-to-peer collaboration over the LAN. Kivy appears only in ``companion/views/``
and ``companion/app.py``; everything else imports no Kivy and is tested without a display.
"""
