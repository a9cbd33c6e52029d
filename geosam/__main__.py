from geosam.cli import main

main(prog_name="geosam")
