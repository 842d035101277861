"""The real image set and the images a mix trains on."""
