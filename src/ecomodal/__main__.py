from ecomodal.cli import main

main()
