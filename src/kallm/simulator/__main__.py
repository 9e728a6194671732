from kallm.simulator.app import main

main()
