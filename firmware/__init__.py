"""The meter firmware (MicroPython). These files are deployed to boards and run on the unix port; they import only what MicroPython has."""
