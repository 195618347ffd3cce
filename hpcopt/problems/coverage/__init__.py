"""The coverage problem: Wi-Fi access points (and a reflector) placed on an indoor floor."""
