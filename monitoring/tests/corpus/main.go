// An ordinary Go program: an HTTP server on localhost, a subprocess, goroutines, JSON.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"path": r.URL.Path})
	}))
	resp, err := http.Get("http://" + ln.Addr().String() + "/ok")
	if err == nil {
		resp.Body.Close()
	}
	out, _ := exec.Command("echo", "hello").Output()
	fmt.Println(strings.TrimSpace(string(out)))
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(n int) { defer wg.Done(); fmt.Println(n * n) }(i)
	}
	wg.Wait()
	status, _ := os.ReadFile("/proc/self/status")
	fmt.Println(len(status) > 0, os.Getenv("HOME"))
}
