"""firmware: the pedal process that turns feet into engine commands (``ouro pedal``).

This package will hold the footswitch, encoder and LED controls built on gpiozero (the pin
factory is passed in, so gpiozero's ``MockFactory`` drives them in tests), the 128x64 OLED
display drawn with luma.oled (the device is passed in, so luma's dummy and capture devices
stand in for the screen), and the process that wires both to the engine's OSC command API.
It runs apart from the engine so that it never holds the engine's GIL. Only
``firmware/controls.py`` may import gpiozero and only ``firmware/display.py`` may import luma.
"""
